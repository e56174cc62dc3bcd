"""Tiny random models saved to disk, for tests and the quick benchmark.

Each builder writes a complete ``save_pretrained`` folder (config, weights, tokenizer), so
``workers.generation.load_model(path)`` exercises the real ``from_pretrained`` code path. Nothing
is downloaded: tokenizers are built in-process with the ``tokenizers`` library, and the weights
are random (seeded), so outputs are gibberish but deterministic. Each call takes well under a
second.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Yes, that answer is good. No, that answer is bad.",
    "yes no Yes No maybe",
    "What is the capital of France? Paris is the capital of France.",
    "You are a helpful assistant. Please answer the question briefly.",
    "A person who loves cats and dogs and long walks in the park.",
    "Question: Answer: Would this person consider the answer good?",
    "Explain how rainbows form, in one or two sentences.",
]

_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def _byte_bpe_tokenizer(vocab_size: int, *, chat_template: bool):
    """Byte-level BPE trained on a tiny fixed corpus; encodes any text losslessly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    if chat_template:
        fast.chat_template = CHATML_TEMPLATE
    return fast


def _wordpiece_tokenizer():
    """Lower-casing WordPiece tokenizer (BERT style) over letters, digits and a few words."""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    words = sorted(
        {w.strip(".,?!").lower() for line in _CORPUS for w in line.split()} - {""}
    )
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-")
    vocab_list = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *chars,
        *(f"##{c}" for c in chars),
        *words,
    ]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _causal_config(arch: str, tokenizer, *, initializer_range: float):
    from transformers import GPT2Config, LlamaConfig

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": initializer_range,
    }
    if arch == "llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=512,
            **ids,
        )
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=512, **ids)
    raise ValueError(f"arch: expected 'llama' or 'gpt2', got {arch!r}")


def tiny_model_dir(
    path: str | Path,
    arch: str = "llama",
    seed: int = 0,
    *,
    chat_template: bool = True,
    vocab_size: int = 400,
    initializer_range: float = 0.02,
) -> Path:
    """Save a tiny random causal LM and its byte-level BPE tokenizer under ``path``.

    Parameters
    ----------
    path
        Folder to write (created if missing).
    arch
        ``"llama"`` (rotary positions, grouped-query attention) or ``"gpt2"`` (absolute positions).
    seed
        Seeds the random weights; the tokenizer does not depend on it.
    chat_template
        Give the tokenizer a ChatML template (``<|im_start|>role ... <|im_end|>``).
    vocab_size
        BPE vocabulary size to train to; two models share a vocabulary iff this matches.
    initializer_range
        Std of the random weights; larger values give sharper next-token distributions.
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    tokenizer = _byte_bpe_tokenizer(vocab_size, chat_template=chat_template)
    config = _causal_config(arch, tokenizer, initializer_range=initializer_range)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_bert_dir(path: str | Path, seed: int = 0) -> Path:
    """Save a tiny random BERT encoder (``AutoModel``) with a WordPiece tokenizer."""
    import torch
    from transformers import AutoModel

    path = Path(path)
    tokenizer = _wordpiece_tokenizer()
    config = _tiny_bert_config(tokenizer)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_reward_model_dir(path: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny random one-logit sequence classifier (a reward model).

    ``arch="llama"`` gives a decoder reward model with a ChatML template (scores the last token);
    ``arch="bert"`` an encoder one without a template (scores ``[CLS]`` of a question/answer pair).
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    if arch == "bert":
        tokenizer = _wordpiece_tokenizer()
        config = _tiny_bert_config(tokenizer, num_labels=1)
    else:
        tokenizer = _byte_bpe_tokenizer(400, chat_template=True)
        config = _causal_config(arch, tokenizer, initializer_range=0.02)
        config.num_labels = 1
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _tiny_bert_config(tokenizer, **extra):
    """The tiny BERT shape shared by the embedder and the encoder reward model."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
