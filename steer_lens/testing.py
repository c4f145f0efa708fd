"""Tiny random-weight models (Llama-like, Gemma-3-like) saved as local HF folders.

They load through `load_model(folder)` exactly like real models, need no download, and
run in milliseconds: the unit tests, notebooks' smoke runs and CLI tests use them.
"""

from __future__ import annotations

from pathlib import Path

import torch

_SPECIALS = ["<pad>", "<bos>", "<eos>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer(folder: Path, *, bos: bool, chat: bool):
    """A byte-level tokenizer (256 byte tokens + 5 specials, no merges) saved to ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {s: i for i, s in enumerate(_SPECIALS)}
    vocab.update({ch: len(_SPECIALS) + i for i, ch in enumerate(sorted(alphabet))})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    if bos:
        from tokenizers import processors

        core.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)  # the bridge re-opens it by name_or_path


def make_tiny_model(folder: str | Path, kind: str = "llama", *, d_model: int = 64,
                    n_layers: int = 4, seed: int = 0, n_ctx: int = 512) -> Path:
    """Write a random-weight ``kind`` ("llama" or "gemma3") model + tokenizer to ``folder``
    (``n_ctx``: context length in tokens; the tiny tokenizer spends about one token per character)."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(folder, bos=(kind == "gemma3"), chat=(kind == "llama"))
    common = dict(
        vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=d_model // 4, max_position_embeddings=n_ctx, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if kind == "llama":
        config = LlamaConfig(**common)
        config.architectures = ["LlamaForCausalLM"]
    elif kind == "gemma3":
        config = Gemma3TextConfig(**common, sliding_window=8, query_pre_attn_scalar=16)
        config.architectures = ["Gemma3ForCausalLM"]
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}; use 'llama' or 'gemma3'")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    return folder


def make_tiny_pair(folder: str | Path, n_ctx: int = 512) -> tuple[Path, Path]:
    """(target, expert) folders of the stand-in pair used by every ``--fast`` mode: a Llama target
    (d_model 64, 4 layers, chat template) and a Gemma-3 expert (d_model 48, 3 layers, BOS); two
    families and two widths, like the real pair. Built once per folder."""
    folder = Path(folder)
    target, expert = folder / "target", folder / "expert"
    if not (target / "config.json").exists():
        make_tiny_model(target, "llama", d_model=64, n_layers=4, n_ctx=n_ctx)
    if not (expert / "config.json").exists():
        make_tiny_model(expert, "gemma3", d_model=48, n_layers=3, seed=1, n_ctx=n_ctx)
    return target, expert

