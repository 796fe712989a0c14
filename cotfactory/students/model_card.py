"""A student folder's README.md: the model card, generated from what the folder holds, so it is
always true — rewritten after training and after every evaluation.

It says what a person receiving the folder needs: the base model and how to load the student, the
method, the data it learned from (the file's fingerprint, the teacher, what each filter kept), the
training settings, and the held-out accuracy with its 95 % interval when it has been evaluated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cotfactory.run_dir import RunDir, StudentDir, write_text_atomic

TRAINING_SETTINGS = (
    "lora_r", "lora_alpha", "epochs", "max_steps", "lr", "batch_size", "grad_accum", "max_source_length",
    "max_target_length", "seed", "alpha", "distill", "distill_alpha", "distill_temperature", "in_context",
)  # fmt: skip


def write_model_card(folder: str | Path) -> Path:
    """(Re)write FOLDER/README.md from student.json, eval.json and the run the student learned from."""
    student = StudentDir(folder)
    info = json.loads(student.info.read_text(encoding="utf-8"))
    config = info.get("config", {})
    lines = [
        "---",
        *_hub_base(str(config.get("student", ""))),
        "library_name: peft" if info.get("adapter") else "library_name: transformers",
        "tags: [cotfactory, distillation, chain-of-thought]",
        "---",
        "",
        f"# {student.path.name}: a {info['method']} student",
        "",
        f"Made by cotfactory {info.get('cotfactory_version', '?')} with `cotfactory train-student`. "
        "Every figure below is read from the files in this folder.",
        "",
        "## Model",
        "",
        f"- Base model: `{config.get('student')}`"
        + (f" (loaded from `{info['base']}`)" if info.get("adapter") else ""),
        f"- Weights here: {'a LoRA adapter' if info.get('adapter') else 'the full model'}; "
        f"{'causal LM' if info.get('causal') else 'sequence-to-sequence'}",
        f"- Method: `{info['method']}` (tasks: {', '.join(info.get('tasks', []))})",
        "",
        "```python",
        *_loading(info, student.path),
        "```",
        "",
        "## Data",
        "",
        *_data(config.get("input", ""), info.get("examples", 0)),
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {name} | `{config[name]}` |" for name in TRAINING_SETTINGS if name in config),
        "",
        "## Held-out evaluation",
        "",
        *_evaluation(student),
        "",
    ]
    card = student.path / "README.md"
    write_text_atomic(card, "\n".join(lines))
    return card


def _hub_base(student: str) -> list[str]:
    """The hub's ``base_model`` key, only for a hub id (a local path or scratch model means nothing there)."""
    if student.count("/") == 1 and not Path(student).exists() and not student.startswith((".", "/", "scratch:")):
        return [f"base_model: {student}"]
    return []


def _loading(info: dict[str, Any], folder: Path) -> list[str]:
    kind = "AutoModelForCausalLM" if info.get("causal") else "AutoModelForSeq2SeqLM"
    if info.get("adapter"):
        return [
            "from peft import PeftModel",
            f"from transformers import {kind}",
            f"base = {kind}.from_pretrained({info['base']!r})",
            f"student = PeftModel.from_pretrained(base, {str(folder)!r})",
        ]
    return [f"from transformers import {kind}", f"student = {kind}.from_pretrained({str(folder)!r})"]


def _data(source: str, examples: int) -> list[str]:
    """Where the examples came from: a run directory's teacher and filter funnel, or a file."""
    lines = [f"- {examples} training examples from `{source}`"]
    run = RunDir(source)
    learned_from = run.filtered if Path(source).is_dir() else Path(source)
    if learned_from.is_file():
        digest = hashlib.sha256(learned_from.read_bytes()).hexdigest()[:16]
        lines.append(f"- Fingerprint of `{learned_from.name}` (sha256): `{digest}`")
    if Path(source).is_dir() and run.config.is_file():
        generate = json.loads(run.config.read_text(encoding="utf-8"))
        teacher = generate.get("teacher", {})
        lines.append(
            f"- Teacher: `{teacher.get('kind')}` `{teacher.get('model') or 'default'}`, templates "
            f"{', '.join(generate.get('templates', []))}, temperatures {generate.get('temperatures')}"
            + (f", top-{generate['logprobs']} logprobs recorded" if generate.get("logprobs") else "")
        )
    if Path(source).is_dir() and run.funnel.is_file():
        funnel = json.loads(run.funnel.read_text(encoding="utf-8"))
        lines += ["", "| filter stage | samples in | kept | dropped |", "|---|---|---|---|"]
        for stage in funnel.get("stages", []):
            dropped = ", ".join(f"{reason} {count}" for reason, count in stage.get("dropped", {}).items()) or "—"
            lines.append(f"| {stage['stage']} | {stage['samples_in']} | {stage['samples_out']} | {dropped} |")
    return lines


def _evaluation(student: StudentDir) -> list[str]:
    if not student.evaluation.is_file():
        return ["Not evaluated yet: `cotfactory eval` writes eval.json and rewrites this card."]
    found = json.loads(student.evaluation.read_text(encoding="utf-8"))
    low, high = found["interval"]
    lines = [
        f"- `{found.get('input')}`: accuracy **{found['accuracy']:.3f}** "
        f"(95 % Wilson interval {low:.3f}–{high:.3f}), {found['correct']}/{found['total']} problems",
    ]
    if found.get("ranked_accuracy") is not None:
        low, high = found["ranked_interval"]
        lines.append(f"- Choice of highest likelihood: {found['ranked_accuracy']:.3f} ({low:.3f}–{high:.3f})")
    untrained = student.untrained.evaluation
    if untrained.is_file():
        before = json.loads(untrained.read_text(encoding="utf-8"))
        lines.append(f"- The base model untrained, same problems: {before['accuracy']:.3f}")
    return lines
