"""Prompts to token batches: chat templates, BOS handling, padding and answer spans.

A prompt is either plain text, or a ``(prompt, completion)`` pair whose completion tokens
form the *span* (e.g. an answer appended to a question): pooling, scoring and steering
can then be restricted to those tokens. With a chat template the prompt becomes the user
turn and the completion is what the assistant starts to say; a prompt text that carries
earlier exchanges (``steer_lens.prompting.ChatPrompt``) puts them first, as user and
assistant turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from typing import Union

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from .devices import model_device

Prompt = Union[str, tuple[str, str]]


@dataclass
class TokenBatch:
    """Right-padded (unless asked otherwise) token ids with masks.

    ``span`` marks the completion tokens of ``(prompt, completion)`` prompts, and every
    real token of plain-text prompts.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    span: Bool[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]

    @property
    def last_index(self) -> Int[Tensor, " batch"]:
        """Position of each row's last real token."""
        if bool(self.attention_mask[:, -1].all()):  # left padding or no padding
            return torch.full_like(self.lengths, self.tokens.shape[1] - 1)
        return self.lengths - 1


def uses_chat_template(model, chat_template: bool | None) -> bool:
    """Resolve ``chat_template=None`` to "use it when the tokenizer has one"."""
    has = getattr(model.tokenizer, "chat_template", None) is not None
    if chat_template and not has:
        raise ValueError(
            f"model {getattr(model.cfg, 'model_name', '?')!r} has no chat template; "
            "pass chat_template=False (or None to use one only when present)"
        )
    return has if chat_template is None else bool(chat_template)


def format_prompt(model, prompt: Prompt, *, chat: bool) -> tuple[str, str]:
    """Return ``(prefix_text, completion_text)`` exactly as they will be tokenised."""
    text, completion = (prompt, "") if isinstance(prompt, str) else prompt
    if not isinstance(text, str) or not isinstance(completion, str):
        raise TypeError(f"a prompt is a str or a (prompt, completion) pair of str, got {prompt!r}")
    if chat:
        # a prompt with earlier exchanges (``steer_lens.prompting.ChatPrompt``, k-shot examples): those
        # become user/assistant turns before its last user message
        turns = getattr(text, "turns", None) or ()
        messages = [{"role": role, "content": content} for pair in turns
                    for role, content in zip(("user", "assistant"), pair)]
        messages.append({"role": "user", "content": getattr(text, "last", text) if turns else text})
        text = model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text, completion


def encode(model, prompt: Prompt, *, chat: bool) -> tuple[list[int], int]:
    """Token ids of one prompt and the index where its span starts.

    BOS is prepended to plain text only when the model's own tokenizer does so
    (``cfg.prepend_bos_hf``); chat templates carry their own special tokens.
    """
    tok = model.tokenizer
    prefix, completion = format_prompt(model, prompt, chat=chat)
    full = prefix + completion
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    if completion:
        cut = len(prefix)  # first token that ends after the prefix belongs to the span
        start = next((i for i, (_, end) in enumerate(offsets) if end > cut), len(ids))
    else:
        start = 0
    bos = getattr(model.cfg, "prepend_bos_hf", None)
    if bos is None:
        bos = getattr(model.cfg, "default_prepend_bos", False)
    if bos and not chat and tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
        start += 1 if completion else 0
    if not ids:
        raise ValueError(f"prompt {prompt!r} tokenises to nothing; pass non-empty text")
    if completion and start >= len(ids):
        raise ValueError(f"completion of {prompt!r} produced no tokens; pass a non-empty completion")
    return ids, start


def encode_all(model, prompts: Sequence[Prompt], *, chat_template: bool | None = None,
               max_len: int | None = None) -> list[tuple[list[int], int]]:
    """Encode every prompt (validating lengths against the context) as (ids, span start)."""
    if len(prompts) == 0:
        raise ValueError("no prompts given; pass at least one prompt")
    chat = uses_chat_template(model, chat_template)
    encoded = [encode(model, p, chat=chat) for p in prompts]
    n_ctx = max_len or getattr(model.cfg, "n_ctx", None)
    longest = max(len(ids) for ids, _ in encoded)
    if n_ctx and longest > n_ctx:
        raise ValueError(
            f"a prompt is {longest} tokens long but the model's context is {n_ctx}; "
            "shorten or truncate the prompt"
        )
    return encoded


def pad(model, encoded: Sequence[tuple[list[int], int]], *, padding_side: str = "right") -> TokenBatch:
    """Pad encoded prompts into one batch (right padding keeps positions exact).

    The batch is filled on the CPU from Python lists, then moved once to the device of the
    model's input embeddings (``devices.model_device``).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    longest = max(len(ids) for ids, _ in encoded)
    pad_id = model.tokenizer.pad_token_id
    pad_id = 0 if pad_id is None else pad_id
    cpu = torch.device("cpu")
    tokens = torch.full((len(encoded), longest), pad_id, dtype=torch.long, device=cpu)
    mask = torch.zeros((len(encoded), longest), dtype=torch.long, device=cpu)
    span = torch.zeros((len(encoded), longest), dtype=torch.bool, device=cpu)
    for row, (ids, start) in enumerate(encoded):
        offset = 0 if padding_side == "right" else longest - len(ids)
        tokens[row, offset : offset + len(ids)] = torch.tensor(ids, device=cpu)
        mask[row, offset : offset + len(ids)] = 1
        span[row, offset + start : offset + len(ids)] = True
    lengths = torch.tensor([len(ids) for ids, _ in encoded], device=cpu)
    device = model_device(model)
    return TokenBatch(tokens=tokens.to(device), attention_mask=mask.to(device), span=span.to(device),
                      lengths=lengths.to(device))


def batch_encode(model, prompts: Sequence[Prompt], *, chat_template: bool | None = None,
                 padding_side: str = "right", max_len: int | None = None) -> TokenBatch:
    """Encode and pad prompts into one batch."""
    encoded = encode_all(model, prompts, chat_template=chat_template, max_len=max_len)
    return pad(model, encoded, padding_side=padding_side)
