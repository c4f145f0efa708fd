"""Where a model's inputs live, so library code creates tensors there and nowhere else.

A TransformerBridge may sit on a GPU, or be spread over several with ``device_map="auto"``;
token ids and attention masks must then go to the device of the input embeddings. Tensors
built inside a hook take the device and dtype of the activation they act on (``x.device``,
``x.dtype``), which is right for any layer of a device-mapped model.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _input_weight(model) -> Tensor | None:
    """The input-embedding matrix of the wrapped HF model, else the first parameter, else None."""
    hf = getattr(model, "original_model", None)
    embeddings = hf.get_input_embeddings() if hasattr(hf, "get_input_embeddings") else None
    if getattr(embeddings, "weight", None) is not None:
        return embeddings.weight
    return next(iter(model.parameters()), None) if hasattr(model, "parameters") else None


def model_device(model) -> torch.device:
    """Device of the model's input embeddings (where token ids and masks must go)."""
    weight = _input_weight(model)
    if weight is not None:
        return weight.device
    return torch.device(getattr(getattr(model, "cfg", None), "device", None) or "cpu")


def model_dtype(model) -> torch.dtype:
    """dtype of the model's input embeddings (the residual stream's dtype)."""
    weight = _input_weight(model)
    return weight.dtype if weight is not None else torch.float32
