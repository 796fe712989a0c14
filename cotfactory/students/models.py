"""Student models: a folder, a hub id, a GGUF file, or a tiny random model built from scratch.

``scratch:t5-tiny`` and ``scratch:llama-tiny`` build small random models with ``ByT5Tokenizer()``
(byte-level, needs no files): the students of tests and the synthetic quality benchmark.
"""

from __future__ import annotations

from typing import Any

from cotfactory.errors import ConfigError

SCRATCH = {
    "t5-tiny": {"d_model": 128, "d_ff": 256, "num_layers": 2, "num_heads": 4, "d_kv": 32},
    "t5-small": {"d_model": 256, "d_ff": 1024, "num_layers": 4, "num_heads": 4, "d_kv": 64},
    "llama-tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4},
    "llama-small": {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4},
}


def is_scratch(spec: str) -> bool:
    return spec.startswith("scratch:")


def build_scratch(spec: str, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer): a random T5 or LLaMA with a byte-level tokenizer."""
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    name = spec.removeprefix("scratch:")
    if name not in SCRATCH:
        raise ConfigError(
            f"student '{spec}': unknown scratch model; choose one of: {', '.join('scratch:' + n for n in SCRATCH)}"
        )
    tokenizer = ByT5Tokenizer()
    torch.manual_seed(seed)
    if name.startswith("t5"):
        config = T5Config(
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id,
            **SCRATCH[name],
        )
        return T5ForConditionalGeneration(config), tokenizer
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=2048,
        num_key_value_heads=SCRATCH[name]["num_attention_heads"],
        tie_word_embeddings=True,
        **SCRATCH[name],
    )
    return LlamaForCausalLM(config), tokenizer


def load_student(spec: str, dtype: Any = None, seed: int = 0) -> tuple[Any, Any, bool]:
    """(model, tokenizer, causal) for a student spec. Never runs a model's own code."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from cotfactory.model_loading import clear_quantizer_flags, quiet_transformers, resolve_model_path

    quiet_transformers()
    if is_scratch(spec):
        model, tokenizer = build_scratch(spec, seed)
        return model, tokenizer, not model.config.is_encoder_decoder
    try:
        location = resolve_model_path(spec)
        config = AutoConfig.from_pretrained(location)
        tokenizer = AutoTokenizer.from_pretrained(location)
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        model = auto.from_pretrained(location, dtype=dtype) if dtype is not None else auto.from_pretrained(location)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"student '{spec}': cannot load ({first})") from None
    if getattr(model, "is_quantized", False):
        clear_quantizer_flags(model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, not config.is_encoder_decoder
