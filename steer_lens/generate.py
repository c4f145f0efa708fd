"""Greedy or sampled generation from prompts with steer-lens tokenisation (chat template, BOS)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .tokens import encode_all, pad


def generate(
    model,
    prompts: str | Sequence[str],
    *,
    max_new_tokens: int = 32,
    chat_template: bool | None = None,
    do_sample: bool = False,
    use_kv_cache: bool = True,
    **kwargs,
) -> list[str]:
    """Generate a continuation for each prompt (a str counts as one); returns the new texts.

    Prompts are left-padded (the bridge's generate handles positions); any ``steer(...)``
    context active around this call applies, with "prompt"/"generated" positions exact.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    encoded = encode_all(model, prompts, chat_template=chat_template)
    batch = pad(model, encoded, padding_side="left")
    with torch.no_grad():
        out = model.generate(
            batch.tokens, max_new_tokens=max_new_tokens, do_sample=do_sample,
            attention_mask=batch.attention_mask if len(prompts) > 1 else None,
            use_past_kv_cache=use_kv_cache, return_type="tokens", verbose=False, **kwargs,
        )
    new = out[:, batch.tokens.shape[1]:]
    eos = model.tokenizer.eos_token_id
    texts = []
    for row in new.tolist():
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(model.tokenizer.decode(row, skip_special_tokens=True))
    return texts
