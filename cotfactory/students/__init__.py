"""Students: training examples per distillation method, the LoRA trainer, and evaluation.

The data's path: teaching records (question, rationale, answer) → training examples (one file per
method in ``methods/``: its builder, its reader and its prompts) → tokenized features with loss masks
(``features.py``) → the multitask ``Trainer`` (``trainer.py``) → a saved adapter that ``evaluate.py``
asks through the method's reader.
"""
