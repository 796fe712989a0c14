"""What the libraries print that a user cannot act on — deprecation notices, load reports, progress
bars of their own — is silenced in normal output, and shown with ``COTFACTORY_DEBUG=1``."""

from __future__ import annotations

import os
import warnings

LIBRARIES = r"(transformers|torch|peft|datasets|accelerate|huggingface_hub|trl)(\.|$)"


def debugging() -> bool:
    return os.environ.get("COTFACTORY_DEBUG", "") not in ("", "0")


def quiet_libraries() -> None:
    """Called once per command, before any library is imported."""
    if debugging():
        return
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=LIBRARIES)
    warnings.filterwarnings("ignore", category=FutureWarning)  # raised from inside library calls, any module
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
