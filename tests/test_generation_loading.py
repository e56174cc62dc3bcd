"""workers.generation.loading: the model loader, its caches, and importing without torch.

Tiny random models are saved to disk and loaded through ``load_model`` (the real
``from_pretrained`` path); no database and no network are needed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tinymodels import tiny_model_dir
from workers import generation
from workers.generation import load_model, loading

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")


# -- loading -------------------------------------------------------------------------------


def test_it_loads_a_saved_folder_through_from_pretrained(tmp_path):
    path = tiny_model_dir(tmp_path / "m", "llama")
    handle = load_model(str(path))
    assert handle.kind == "causal-lm"
    assert handle.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert handle.dtype == "float32"
    assert handle.name_or_path == str(path)
    assert handle.model.config.model_type == "llama"
    assert not handle.model.training
    assert len(handle.tokenizer) == handle.model.config.vocab_size


def test_it_loads_each_model_once_per_process(tmp_path):
    path = str(tiny_model_dir(tmp_path / "m", "gpt2"))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert load_model(path) is load_model(
        path, revision=None, device=device, kind="causal-lm"
    )


def test_it_rejects_a_demo_ref_with_the_wrong_kind_or_a_revision():
    with pytest.raises(ValueError, match="^kind"):
        load_model(generation.DEMO_EMBEDDER, kind="causal-lm")
    with pytest.raises(ValueError, match="^revision"):
        load_model(generation.DEMO_CHAT_MODEL, revision="main")


def test_cpu_thread_count_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "zero")
    with pytest.raises(ValueError, match="UALIGN_TORCH_THREADS"):
        loading._configure_threads()
    monkeypatch.setenv("UALIGN_TORCH_THREADS", "1")
    loading._configure_threads()
    assert torch.get_num_threads() == 1


def test_model_cache_is_built_atomically(tmp_path):
    final = tmp_path / "cache" / "converted"

    def crash(tmp: Path) -> None:
        (tmp / "model.safetensors").write_text("half written")
        raise RuntimeError("killed mid-conversion")

    with pytest.raises(RuntimeError):
        loading._atomic_build(final, crash)
    assert not final.exists()
    assert list(final.parent.iterdir()) == []

    loading._atomic_build(final, lambda tmp: (tmp / "config.json").write_text("{}"))
    assert (final / "config.json").read_text() == "{}"

    def must_not_run(tmp: Path) -> None:
        raise AssertionError("an existing cache is rebuilt")

    assert loading._atomic_build(final, must_not_run) == final


def test_model_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UALIGN_MODEL_CACHE", str(tmp_path))
    assert generation.model_cache_dir() == tmp_path
    monkeypatch.delenv("UALIGN_MODEL_CACHE")
    assert generation.model_cache_dir() == ROOT / "var" / "models"


def test_importing_the_worker_modules_does_not_import_torch():
    code = "import sys, workers.generation, workers.populations; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]
