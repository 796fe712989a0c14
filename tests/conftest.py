"""Shared fixtures. Tests never reach a model hub."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # helpers, loopback, fake_openai_server, tiny_models
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-reliability", action="store_true", help="run the long reliability soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-reliability"):
        return
    skip = pytest.mark.skip(reason="long soak test: make test-reliability")
    for item in items:
        if "reliability" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaMA model folder (2 layers, 32 wide, BPE tokenizer with a chat template)."""
    from tiny_models import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The embedded SmolLM2 GGUF, converted once to safetensors in the cotfactory cache."""
    from cotfactory.model_loading import embedded_gguf, resolve_model_path

    embedded_gguf()  # fails clearly when the wheel is missing
    return resolve_model_path(None)


@pytest.fixture()
def gsm8k_sample() -> Path:
    return ROOT / "data" / "gsm8k" / "train_sample.jsonl"
