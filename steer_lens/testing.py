"""Tiny random-weight models of six architecture families, saved as local HF folders.

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


# The paper's families and more. Each entry: (tokenizer adds BOS, chat template, untied unembedding).
FAMILIES: dict[str, tuple[bool, bool, bool]] = {
    "llama3": (True, True, True),    # Llama-3.1: "llama3" RoPE scaling
    "qwen2": (False, True, True),    # Qwen2.5: q/k/v biases
    "gemma2": (True, True, False),   # Gemma-2: attention and final logit soft-capping, sliding window
    "gemma3": (True, False, False),  # Gemma-3: sliding window, q/k norms
    "mistral": (True, True, True),   # Mistral: sliding window on every layer
    "phi3": (False, True, True),     # Phi-3: fused qkv and gate/up projections, partial rotary
}
KINDS = ("llama", *FAMILIES)


def _family_config(kind: str, common: dict):
    """The HF config of a tiny ``kind`` model. Windows and caps are small enough to act on
    prompts of ~10 tokens and on weights of std 0.2 (logits and attention scores of order 1)."""
    import transformers as tf

    if kind == "llama":  # unchanged since the first tests (plain RoPE, tied, no BOS)
        return tf.LlamaConfig(**common), "LlamaForCausalLM"
    if kind == "llama3":  # Llama-3.1's scaling; original context 64 puts the head's frequencies
        # in all three regimes (kept, smoothed, divided by `factor`)
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        return tf.LlamaConfig(**common, rope_parameters=rope), "LlamaForCausalLM"
    if kind == "qwen2":
        return tf.Qwen2Config(**common), "Qwen2ForCausalLM"
    if kind == "gemma2":
        return tf.Gemma2Config(**common, sliding_window=4, query_pre_attn_scalar=16, attn_logit_softcapping=1.0,
                               final_logit_softcapping=2.0), "Gemma2ForCausalLM"
    if kind == "gemma3":
        return tf.Gemma3TextConfig(**common, sliding_window=8, query_pre_attn_scalar=16), "Gemma3ForCausalLM"
    if kind == "mistral":
        return tf.MistralConfig(**common, sliding_window=6), "MistralForCausalLM"
    if kind == "phi3":
        rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
        return tf.Phi3Config(**common, rope_parameters=rope), "Phi3ForCausalLM"
    raise ValueError(f"unknown tiny model kind {kind!r}; use one of {', '.join(KINDS)}")


def make_tiny_model(folder: str | Path, kind: str = "llama", *, d_model: int = 64,
                    n_layers: int = 4, seed: int = 0, n_ctx: int = 512,
                    dtype: torch.dtype = torch.float32, init_std: float | None = None) -> Path:
    """Write a random-weight ``kind`` model + tokenizer to ``folder`` and return the folder.

    ``kind``: "llama" (plain Llama, no BOS, chat template) or one of ``FAMILIES``: "llama3",
    "qwen2", "gemma2", "gemma3", "mistral", "phi3". 4 heads (2 key/value heads), head_dim
    d_model/4, MLP width 2*d_model. ``n_ctx``: context length in tokens (the tiny tokenizer
    spends about one token per character). ``dtype``: dtype of the saved weights. ``init_std``:
    std of the random weights and biases (None: the config's 0.02 and zero biases, under which
    attention is near uniform).
    """
    from transformers import AutoModelForCausalLM

    if kind not in KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; use one of {', '.join(KINDS)}")
    bos, chat, untied = FAMILIES.get(kind, (False, True, False))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer(folder, bos=bos, chat=chat)
    common = dict(
        vocab_size=len(tok), hidden_size=d_model, intermediate_size=2 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=2,
        head_dim=d_model // 4, max_position_embeddings=n_ctx, tie_word_embeddings=not untied,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if init_std is not None:
        common["initializer_range"] = init_std
    config, architecture = _family_config(kind, common)
    config.architectures = [architecture]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if init_std is not None:  # HF initialises biases (Qwen2's q/k/v) to zero, which would hide them
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith(".bias"):
                    param.normal_(std=init_std)
    model = model.to(dtype)
    model.save_pretrained(folder)
    return folder


def make_families(folder: str | Path, *, widths: tuple[int, ...] = (32, 48), n_layers: int = 2,
                  n_ctx: int = 512, dtype: torch.dtype = torch.float32, init_std: float = 0.2) -> dict[str, Path]:
    """One tiny model per family in ``FAMILIES`` under ``folder/<kind>``: seed = its index,
    d_model cycling through ``widths`` (llama3 32, qwen2 48, gemma2 32, ...), so neighbours
    differ in width. A folder that already holds a model is reused. ``init_std`` 0.2 makes
    attention sharp (scores of order 1), so sliding windows, soft-capping and RoPE variants
    change the logits."""
    out = {}
    for seed, kind in enumerate(FAMILIES):
        path = Path(folder) / kind
        if not (path / "config.json").exists():
            make_tiny_model(path, kind, d_model=widths[seed % len(widths)], n_layers=n_layers, seed=seed,
                            n_ctx=n_ctx, dtype=dtype, init_std=init_std)
        out[kind] = path
    return out


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

