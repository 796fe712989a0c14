"""Decoders: how a local model chooses tokens (per-row sampling, SCOTT contrastive decoding).

They sit apart from the teacher adapters that call them: a decoder knows logits, not requests."""
