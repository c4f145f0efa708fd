"""Fold a steering plan into a model's weights: a plain Hugging Face checkpoint that steers itself.

``plan.apply(model, s)`` adds the constant ``delta = s × norms[hook] × unit vector`` to the
residual stream at every position. A constant added where a sublayer's output joins the
residual stream is the same as a bias on that sublayer's last linear map, *if* nothing sits
between that map and the residual add. Llama-family models (``model_type == "llama"``, e.g.
SmolLM2) have exactly that layout and config switches that give those maps a bias:

=============================  =========================================================
plan hook                       folded into (Llama)
=============================  =========================================================
``blocks.L.hook_resid_post``    ``model.layers.L.mlp.down_proj.bias`` (``mlp_bias=True``)
``blocks.L.hook_mlp_out``       the same (the MLP output is added to the residual as is)
``blocks.L.hook_resid_pre``     the same as ``blocks.{L-1}.hook_resid_post`` (L >= 1)
``blocks.L.hook_attn_out``      ``model.layers.L.self_attn.o_proj.bias`` (``attention_bias=True``)
=============================  =========================================================

The switches also give ``gate_proj``/``up_proj`` and ``q/k/v_proj`` biases; those are written
as zeros, so every other block computes exactly what it did. Refused:

* ``blocks.L.hook_resid_mid``: in TransformerBridge it is an alias of ``ln2.hook_in``, so a
  vector added there reaches only the MLP's input norm; the residual stream carried to
  ``hook_resid_post`` keeps the unsteered value. That is not a constant on any sublayer
  output, so no bias reproduces it (``hook_attn_out`` is the hook that adds to the stream).
* Gemma 2/3: an RMSNorm (``post_feedforward_layernorm``, ``post_attention_layernorm``) sits
  between each sublayer and the residual add, so no bias of theirs adds a constant there.
* Plans whose added vector depends on the input: positions "prompt" / "generated", a
  context-dependent mode, a norm measured at run time.

One difference from ``plan.apply`` by design: the merged weights also shift padding positions
(the hooks skip them); padded positions are masked out of attention, so real tokens' logits agree.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from .models import model_id
from .plan import SteeringPlan
from .steer import check_strength

CARD = "steer_lens_merge.json"
CARD_FORMAT = "steer_lens.merge/1"
FOLDABLE = ("llama",)  # HF model_type values whose layout is checked to fold exactly
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)$")
_BIAS = {"mlp": "model.layers.{}.mlp.down_proj.bias", "attn": "model.layers.{}.self_attn.o_proj.bias"}


def bias_slot(hook: str, n_layers: int) -> tuple[str, int]:
    """Where a hook folds: ("mlp", L) = block L's MLP output bias, ("attn", L) = its attention
    output bias."""
    m = _HOOK.match(hook)
    if not m:
        raise ValueError(f"cannot fold hook {hook!r} into weights: only blocks.L.hook_resid_post, "
                         "hook_resid_pre, hook_mlp_out and hook_attn_out can be merged")
    layer, kind = int(m.group(1)), m.group(2)
    if not 0 <= layer < n_layers:
        raise ValueError(f"hook {hook!r} names layer {layer} but the model has {n_layers} layers")
    if kind == "resid_mid":
        raise ValueError(f"cannot fold {hook!r}: in TransformerBridge hook_resid_mid is the input of the "
                         "MLP's norm (ln2.hook_in), so steering there changes only what the MLP reads, not "
                         "the residual stream, and no bias reproduces that; steer at run time instead")
    if kind == "resid_pre":
        if layer == 0:
            raise ValueError(f"cannot fold {hook!r}: it is the embedding output, which has no bias "
                             "(and SmolLM2/Gemma tie it to the unembedding); steer blocks.0.hook_resid_post instead")
        return "mlp", layer - 1
    return ("attn" if kind == "attn_out" else "mlp"), layer


def bias_deltas(plan: SteeringPlan, strength: float, n_layers: int) -> dict[tuple[str, int], Float[Tensor, " d_model"]]:
    """{(kind, layer): summed ``strength × norms[hook] × unit vector``} in float64, the constant
    each slot must add (several hooks on one slot add up, as their hooks would)."""
    strength = check_strength(strength)
    if not plan.vectors:
        raise ValueError("the plan has no vectors to merge")
    out: dict[tuple[str, int], Tensor] = {}
    for hook, vec in plan.vectors.items():
        slot = bias_slot(hook, n_layers)
        if hook not in plan.norms:
            raise ValueError(f"the plan stores no norm for {hook}, so its scale would be measured on each "
                             "input at run time and cannot be folded into weights; re-fit or re-save the plan")
        vec = torch.as_tensor(vec, dtype=torch.float64).flatten()
        if not torch.isfinite(vec).all() or float(vec.norm()) == 0:
            raise ValueError(f"the plan's vector for {hook} is zero or not finite; re-fit the plan")
        add = strength * float(plan.norms[hook]) * vec / vec.norm()
        out[slot] = out.get(slot, torch.zeros_like(add)) + add
    return out


def check_foldable(plan: SteeringPlan, positions: str = "all") -> None:
    """Refuse plans whose added vector depends on the input (only a constant folds into a bias)."""
    if positions != "all" or plan.settings.get("positions", "all") != "all":
        pos = positions if positions != "all" else plan.settings.get("positions")
        raise ValueError(f"cannot merge a plan applied at positions {pos!r}: a bias acts on every token; "
                         "only positions='all' can be folded into weights (steer at run time instead)")
    mode = plan.settings.get("mode", "fixed")
    if mode != "fixed":
        raise ValueError(f"cannot merge a plan in {mode!r} mode: its vector depends on the context, a bias "
                         "cannot; steer at run time instead, or merge its fixed vectors with "
                         "dataclasses.replace(plan, settings={**plan.settings, 'mode': 'fixed'})")


def _check_architecture(hf) -> None:
    model_type = getattr(hf.config, "model_type", "?")
    if model_type in FOLDABLE:
        return
    why = ""
    if model_type.startswith("gemma"):
        why = (f" ({model_type} normalises each sublayer's output (post_feedforward_layernorm / "
               "post_attention_layernorm) before the residual add, so no bias can add a constant there)")
    raise ValueError(f"cannot fold a plan into a {model_type!r} model{why}; merging supports "
                     f"{', '.join(FOLDABLE)} models; steer this model at run time with plan.apply, "
                     "or export a llama.cpp control vector (steer-lens export)")


def _hf_state_dict(hf, keys) -> dict[str, Tensor]:
    """The wrapped HF model's weights under plain HF names (TransformerBridge wraps each module in
    ``_original_component`` and adds aliases; the aliases are dropped)."""
    out = {}
    for key, value in hf.state_dict().items():
        clean = key.replace("._original_component", "")
        if clean in keys:
            out[clean] = value
    return out


def _source_tokenizer(model):
    """The model's tokenizer as its authors configured it, re-read from the folder it came from
    (the bridge's own copy may add BOS where the original does not)."""
    from transformers import AutoTokenizer

    src = getattr(getattr(model, "tokenizer", None), "name_or_path", "")
    try:  # a local folder (registry models: their cache entry) or a repo id in the local HF cache
        return AutoTokenizer.from_pretrained(src, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot find the model's tokenizer files at {src!r} ({err}); "
                         "pass tokenizer=AutoTokenizer.from_pretrained(...)") from None


def merged_model(model, plan: SteeringPlan, strength: float, *, positions: str = "all"):
    """A plain ``transformers`` model equal to ``model`` steered by ``plan`` at ``strength``
    (every position); ``model`` itself is not changed. Returns ``(hf_model, {bias name: hooks})``."""
    from transformers import AutoModelForCausalLM

    check_foldable(plan, positions)
    plan.check_compatible(model)
    hf = model.original_model
    _check_architecture(hf)
    deltas = bias_deltas(plan, strength, int(model.cfg.n_layers))
    config = copy.deepcopy(hf.config)
    switched_on = []  # the bias families this merge adds (absent from the original weights)
    for switch, kind, family in (("mlp_bias", "mlp", r"mlp\.(gate|up|down)_proj"),
                                 ("attention_bias", "attn", r"self_attn\.(q|k|v|o)_proj")):
        if not getattr(config, switch, False) and any(k == kind for k, _ in deltas):
            setattr(config, switch, True)
            switched_on.append(family)
    merged = AutoModelForCausalLM.from_config(config, dtype=hf.dtype)
    expected = merged.state_dict()
    weights = _hf_state_dict(hf, expected)
    missing = [k for k in expected if k not in weights]
    unexplained = [k for k in missing
                   if not any(re.fullmatch(rf"model\.layers\.\d+\.{f}\.bias", k) for f in switched_on)]
    if unexplained:
        raise ValueError(f"could not map the model's weights to Hugging Face names (e.g. {unexplained[:3]}); "
                         "is it a TransformerBridge from steer_lens.load_model?")
    with torch.no_grad():
        for key in missing:  # biases the switches created: zero unless a slot fills them below
            weights[key] = torch.zeros_like(expected[key])
        for (kind, layer), add in deltas.items():
            name = _BIAS[kind].format(layer)
            weights[name] = weights[name] + add.to(weights[name].device, weights[name].dtype)
    merged.load_state_dict(weights, strict=True)
    merged.generation_config = copy.deepcopy(hf.generation_config)
    merged.eval()
    slots: dict[str, list[str]] = {}
    for hook in plan.vectors:
        kind, layer = bias_slot(hook, int(model.cfg.n_layers))
        slots.setdefault(_BIAS[kind].format(layer), []).append(hook)
    return merged, slots


def merge_plan(model, plan: SteeringPlan, strength: float, out_dir: str | os.PathLike, *,
               positions: str = "all", tokenizer=None) -> Path:
    """Write ``out_dir``: a Hugging Face checkpoint (config, safetensors weights, tokenizer) of
    ``model`` with ``plan`` at ``strength`` folded into biases, plus ``steer_lens_merge.json``
    (plan, strength, which bias holds which hook). Loads with plain
    ``AutoModelForCausalLM.from_pretrained(out_dir)``. Written to a temporary sibling folder,
    then renamed into place; an existing ``out_dir`` is replaced only if it is an earlier merge."""
    from . import __version__

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; choose a folder path for the merged model")
    if out.is_dir() and any(out.iterdir()) and not (out / CARD).is_file():
        raise ValueError(f"refusing to overwrite {out}: it is not empty and not an earlier steer-lens merge "
                         f"(no {CARD}); choose a new folder")
    merged, slots = merged_model(model, plan, strength, positions=positions)
    tokenizer = tokenizer if tokenizer is not None else _source_tokenizer(model)
    card = {
        "format": CARD_FORMAT, "library_version": __version__, "strength": float(strength),
        "positions": "all", "base_model": model_id(model), "biases": slots,
        "plan": {"hooks": list(plan.vectors), "norms": plan.norms, "target": plan.target,
                 "expert": plan.expert, "pairs": [p.__dict__ for p in plan.pairs],
                 "settings": plan.settings, "data_hash": plan.data_hash},
        "note": "each listed bias adds strength x norm x unit vector of its hooks to the residual "
                "stream at every token (padding included), as plan.apply(model, strength) does",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    aside = None
    try:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CARD).write_text(json.dumps(card, indent=1, default=str))
        umask = os.umask(0)
        os.umask(umask)
        for path in tmp.iterdir():  # mkdtemp (and some writers) make owner-only files: use the usual modes
            path.chmod(0o666 & ~umask)
        tmp.chmod(0o777 & ~umask)
        if out.exists():  # move the earlier merge aside; put it back if the swap fails
            aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            os.replace(out, aside / "merge")
        try:
            os.replace(tmp, out)
        except BaseException:
            if aside is not None:
                os.replace(aside / "merge", out)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return out


def read_card(folder: str | os.PathLike) -> dict:
    """The ``steer_lens_merge.json`` of a merged folder."""
    path = Path(folder) / CARD
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a steer-lens merge: {CARD} is missing")
    return json.loads(path.read_text())
