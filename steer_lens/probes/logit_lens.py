"""Logit lens of a steering vector, and the direct effect of steering on next-token logits.

`unembed_scores(model, v)` = ``ln_final(v) @ W_U`` (no unembedding bias). With ``norm=True``
(default) the target's final RMSNorm is applied to the vector as if it were a residual:
``gamma * v / rms(v)``, i.e. the norm's learned elementwise scale gamma IS applied (Gemma's
``1 + w`` convention included, since we call the bridge's own ``ln_final``) and the overall
size is fixed to rms 1, so scores do not depend on ``|v|``. ``norm=False`` is the raw
``v @ W_U`` (no gamma). Token ranking is what matters; scores are in logit units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..steer import steer
from ..tokens import Prompt, batch_encode


def _tok(model, i: int) -> str:
    return model.tokenizer.decode([i])


def _ranked(model, scores: Tensor, k: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    top = torch.topk(scores, k)
    bottom = torch.topk(-scores, k)
    return ([(_tok(model, int(i)), float(s)) for s, i in zip(top.values, top.indices)],
            [(_tok(model, int(i)), float(-s)) for s, i in zip(bottom.values, bottom.indices)])


def unembed_scores(model, vector: Float[Tensor, " d_model"], *, norm: bool = True) -> Float[Tensor, " vocab"]:
    """Logit-lens scores of one vector over the vocabulary (see module doc for ``norm``)."""
    v = torch.as_tensor(vector, dtype=torch.float32).flatten()
    w_u = model.W_U
    v = v.to(w_u.device)
    if v.shape[0] != model.cfg.d_model:
        raise ValueError(f"vector has width {v.shape[0]} but the model's d_model is {model.cfg.d_model}")
    with torch.no_grad():
        h = model.ln_final(v[None, None])[0, 0] if norm else v
        return (h.float() @ w_u.float()).float()


@dataclass
class LensResult:
    """Top/bottom tokens (decoded text, score) of a vector's logit lens; ``scores`` "vocab"."""

    top: list[tuple[str, float]]
    bottom: list[tuple[str, float]]
    scores: Tensor
    norm: bool

    def table(self) -> list[dict]:
        """Rows rank, top_token, top_score, bottom_token, bottom_score (for CSV/Markdown)."""
        return [{"rank": r + 1, "top_token": t[0], "top_score": round(t[1], 4),
                 "bottom_token": b[0], "bottom_score": round(b[1], 4)}
                for r, (t, b) in enumerate(zip(self.top, self.bottom))]


def logit_lens(model, vector: Float[Tensor, " d_model"], *, k: int = 10, norm: bool = True) -> LensResult:
    """The ``k`` tokens a vector promotes most and least when read out by the unembedding."""
    scores = unembed_scores(model, vector, norm=norm)
    top, bottom = _ranked(model, scores, min(k, scores.shape[0]))
    return LensResult(top, bottom, scores, norm)


@dataclass
class DirectEffect:
    """Steered minus unsteered next-token logits at each prompt's last token.

    ``delta`` "n vocab" (logits), ``mean_delta`` "vocab"; ``kl`` "n" is KL(steered || clean) in
    nats; ``top``/``bottom`` rank tokens by mean log-prob change (``mean_dlogprob``)."""

    delta: Tensor
    mean_delta: Tensor
    mean_dlogprob: Tensor
    kl: Tensor
    top: list[tuple[str, float]]
    bottom: list[tuple[str, float]]


def last_logits(model, prompts: Sequence[Prompt], *, chat_template: bool | None = None) -> Float[Tensor, "n vocab"]:
    """The model's next-token logits (float32) after each prompt, as it stands (hooks included)."""
    batch = batch_encode(model, prompts, chat_template=chat_template)
    with torch.no_grad():
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
    return logits[torch.arange(len(prompts), device=logits.device), batch.last_index.to(logits.device)].float()


def direct_effect(model, prompts: Sequence[Prompt], vectors: Mapping[str, Tensor] | None = None,
                  strength: float = 1.0, *, plan=None, norms: Mapping[str, float] | None = None,
                  k: int = 10, chat_template: bool | None = None,
                  clean: Float[Tensor, "n vocab"] | None = None) -> DirectEffect:
    """How steering (``plan`` or ``vectors`` at ``strength``, relative scale) changes the
    next-token distribution after each prompt (all positions steered, as ``plan.apply``).

    ``clean``: the unsteered logits ``last_logits(model, prompts)`` when already computed (e.g. to
    compare many plans or strengths on the same prompts); recomputed when None."""
    if (plan is None) == (vectors is None):
        raise ValueError("pass exactly one of vectors= or plan=")
    prompts = list(prompts)
    if clean is None:
        clean = last_logits(model, prompts, chat_template=chat_template)
    elif clean.ndim != 2 or clean.shape[0] != len(prompts):
        raise ValueError(f"clean logits have shape {tuple(clean.shape)} but there are {len(prompts)} prompts; "
                         "pass last_logits(model, prompts) for these prompts: (n_prompts, vocab)")
    ctx = plan.apply(model, strength) if plan is not None else steer(model, vectors, strength, norms=norms)
    with ctx:
        steered = last_logits(model, prompts, chat_template=chat_template)
    if clean.shape != steered.shape:
        raise ValueError(f"clean logits have shape {tuple(clean.shape)}, the model's are {tuple(steered.shape)}; "
                         "pass last_logits(model, prompts) of this model")
    clean = clean.float().to(steered.device)
    lp_c, lp_s = torch.log_softmax(clean, -1), torch.log_softmax(steered, -1)
    kl = (lp_s.exp() * (lp_s - lp_c)).sum(-1)
    dlp = (lp_s - lp_c).mean(0)
    top, bottom = _ranked(model, dlp, min(k, dlp.shape[0]))
    delta = steered - clean
    return DirectEffect(delta, delta.mean(0), dlp, kl, top, bottom)
