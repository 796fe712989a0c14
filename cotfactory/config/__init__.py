"""Every stage's configuration, one pydantic model per stage: generate, filter, train, eval, pipeline.

Each field is declared once — name, type, default, help, and whether it can change what the stage
writes (``RUNTIME`` fields cannot) — and the CLI flags, the README reference and the pipeline's stage
fingerprints are all derived from that declaration.
"""
