"""lm-evaluation-harness tasks that ask a student exactly what ``cotfactory eval`` asks it.

``write_lm_eval_tasks(student, problems, out_dir)`` writes, in ``out_dir``:

- ``NAME.jsonl`` — the held-out problems, each with the student's own prompt (``context``), its
  ``choices`` and the gold (``label``: the gold's index among the choices; ``gold``: its text);
- ``NAME.yaml`` — an offline lm-eval task over that file (``dataset_path: json`` with
  ``dataset_kwargs.data_files``, an absolute path), in lm-eval's own keys;
- ``lm_eval.json`` — the task name, model arguments and command, for programs;
- ``README.md`` — the command to run, and what should agree with ``predictions.jsonl``.

Multiple-choice problems of students that answer in one word (label-only, step-by-step's answer prompt)
become an ``output_type: multiple_choice`` task: each choice is scored as a continuation of the
student's answer prompt, as ``cotfactory eval`` ranks them (``ranked`` ↔ lm-eval's ``acc``,
``ranked_norm`` ↔ ``acc_norm``). Everything else becomes a ``generate_until`` task with the student's
prompt and a regex filter that reads the answer from where the method writes it (after its separator
for Fine-tune-CoT), scored by ``exact_match``; cotfactory's own answer matching is more lenient (numbers
compare numerically, a choice may be named by its letter), so that accuracy is a lower bound of eval's.

The model arguments make lm-eval tokenize as the student's trainer did: lm-eval encodes a causal
prompt with the tokenizer's special tokens unless ``add_bos_token=False``, and a student never sees
a trailing EOS (a byte-level ByT5 tokenizer appends one), so ``add_bos_token`` is chosen by probing
the tokenizer.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotfactory.errors import ConfigError, DataError
from cotfactory.records import Problem, choice_index
from cotfactory.run_dir import StudentDir, write_json_atomic, write_jsonl_atomic, write_text_atomic
from cotfactory.students.methods import METHODS, UNTRAINED_METHOD, PromptFormat
from cotfactory.students.methods.base import label_target
from cotfactory.students.methods.label_only import ANSWER_CUE

MANIFEST = "lm_eval.json"
# the first number, as GSM8K's lm-eval task reads one: "$1,234.5" → "1,234.5" (commas ignored by exact_match)
NUMBER = r"(-?[$0-9.,]*[0-9])"
TEXT = r"(\S.*\S|\S)"
EXACT_MATCH = {
    "metric": "exact_match",
    "aggregation": "mean",
    "higher_is_better": True,
    "ignore_case": True,
    "ignore_punctuation": False,
    "regexes_to_ignore": [",", "\\$", "\\.$"],
}


@dataclass(frozen=True)
class StudentModel:
    """What lm-eval needs to load a student as the hf model: ``pretrained`` (and ``peft``)."""

    method: str
    causal: bool
    pretrained: str
    peft: str | None
    tokenizer: str  # where the student's tokenizer is


def write_lm_eval_tasks(
    student_folder: str | Path,
    problems: list[Problem],
    out_dir: str | Path,
    name: str | None = None,
    max_new_tokens: int = 256,
) -> Path:
    """Write an offline lm-eval task that prompts ``student_folder`` as ``cotfactory eval`` does, over
    ``problems``; returns ``out_dir``. ``max_new_tokens``: eval's limit on what a student writes (its
    bare-answer methods always get 32). See the module docstring for what is written."""
    if not problems:
        raise DataError("lm-eval task: no problems to write")
    model = _student_model(str(student_folder))
    form = METHODS.get(model.method, f"{student_folder}: ").single_prompt
    if form is None:
        raise ConfigError(
            f"{student_folder}: method '{model.method}' has no single-prompt lm-eval equivalent; "
            f"lm-eval tasks exist for: {', '.join(n for n in METHODS if METHODS.get(n).single_prompt)}"
        )
    with_choices = [p for p in problems if p.choices]
    if with_choices and len(with_choices) != len(problems):
        raise DataError("lm-eval task: the problems mix multiple-choice and open questions; write them separately")
    multiple_choice = form.scores_choices and bool(with_choices)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or _task_name(model.method, Path(student_folder).name)
    data_path = (out / f"{name}.jsonl").resolve()
    rows = [_row(p, form.prompt(p, model.causal), multiple_choice) for p in problems]
    write_jsonl_atomic(data_path, rows)
    task = (
        _multiple_choice_task(name, data_path, model.causal)
        if multiple_choice
        else _generation_task(name, data_path, form, problems[0].answer_type, max_new_tokens)
    )
    _write_yaml(out / f"{name}.yaml", task, f"{model.method} student {student_folder}")
    bos, note = _bos_setting(model)
    model_args = _model_args(model, bos)
    command = [
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        model_args,
        "--tasks",
        name,
        "--include_path",
        str(out.resolve()),
        "--batch_size",
        "8",
        "--log_samples",
        "--output_path",
        str((out / "results").resolve()),
    ]
    manifest = {
        "task": name,
        "output_type": task["output_type"],
        "include_path": str(out.resolve()),
        "data": str(data_path),
        "problems": len(rows),
        "student": str(student_folder),
        "method": model.method,
        "model_args": model_args,
        "command": command,
        "tokenization_note": note,
    }
    write_json_atomic(out / MANIFEST, manifest)
    write_text_atomic(out / "README.md", _readme(manifest, multiple_choice))
    return out


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))


def run_lm_eval(manifest: dict[str, Any], device: str = "cpu", batch_size: int = 8) -> dict[str, Any]:
    """Run the written task in-process with lm-eval's Python API (``simple_evaluate``), logging samples:
    what the printed command does, for tests and benchmarks."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model="hf",
        model_args=manifest["model_args"],
        tasks=[manifest["task"]],
        task_manager=TaskManager(include_path=manifest["include_path"], include_defaults=False),
        log_samples=True,
        device=device,
        batch_size=batch_size,
    )


def shell_command(manifest: dict[str, Any]) -> str:
    return " ".join(shlex.quote(part) for part in manifest["command"])


# --- the student ---------------------------------------------------------------------------------------


def _student_model(folder: str) -> StudentModel:
    from cotfactory.students.evaluate import read_student

    if StudentDir(folder).is_student():
        info = read_student(folder)
        location = str(Path(folder).resolve())
        if info["adapter"]:
            return StudentModel(info["method"], bool(info["causal"]), info["base"], location, location)
        return StudentModel(info["method"], bool(info["causal"]), location, None, location)
    return _untrained_model(folder)


def _untrained_model(spec: str) -> StudentModel:
    """A model spec evaluated untrained: asked as ``cotfactory eval`` asks it (``UNTRAINED_METHOD``)."""
    from transformers import AutoConfig

    from cotfactory.model_loading import resolve_model_path
    from cotfactory.students.models import is_scratch

    if is_scratch(spec):
        raise ConfigError(f"{spec}: a scratch model exists nowhere on disk; lm-eval cannot load it")
    location = resolve_model_path(spec)
    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{spec}: cannot read its config ({str(exc).strip().splitlines()[0]})") from None
    return StudentModel(UNTRAINED_METHOD, not config.is_encoder_decoder, location, None, location)


def _bos_setting(model: StudentModel) -> tuple[bool | None, str]:
    """lm-eval's ``add_bos_token`` that encodes a prompt as ``Student.encode_prompt`` does, and a note
    when no setting does.

    lm-eval encodes with the tokenizer's special tokens unless ``add_bos_token`` says otherwise; a
    causal student reads them without a trailing EOS. Seq2seq: lm-eval keeps the special tokens
    (its ``add_bos_token`` only applies to causal models), the student ends its prompt with EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer)
    probe = "Question?" + ANSWER_CUE
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if not model.causal:
        if special and special[-1] == eos:
            return None, ""
        return None, "lm-eval encodes the prompt without the EOS the student ends it with"
    student = special[:-1] if special and special[-1] == eos else special
    if student == plain:
        return False, ""
    if student == special:
        return True, ""
    return None, (
        "the tokenizer adds special tokens at both ends; lm-eval keeps both or neither, the student only the first"
    )


def _model_args(model: StudentModel, bos: bool | None) -> str:
    for path in (model.pretrained, model.peft or ""):
        if "," in path or "=" in path:
            raise ConfigError(f"{path}: lm-eval's --model_args cannot hold a path with ',' or '='; move the student")
    args = [f"pretrained={model.pretrained}"]
    if model.peft:  # the adapter folder holds the student's tokenizer; a scratch base folder has none
        args += [f"peft={model.peft}", f"tokenizer={model.tokenizer}"]
    args.append(f"backend={'causal' if model.causal else 'seq2seq'}")
    if bos is not None:
        args.append(f"add_bos_token={bos}")
    return ",".join(args)


# --- the task ------------------------------------------------------------------------------------------


def _task_name(method: str, folder: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", f"cotfactory_{method}_{folder}".lower()).strip("_")


def _row(problem: Problem, context: str, multiple_choice: bool) -> dict[str, Any]:
    if problem.gold is None:
        raise DataError(f"problem {problem.id}: no gold answer; lm-eval scores only problems with one")
    row: dict[str, Any] = {"id": problem.id, "context": context, "gold": problem.gold}
    if multiple_choice:
        row["choices"] = problem.choices
        row["label"] = _gold_index(problem)
    return row


def _gold_index(problem: Problem) -> int:
    """The gold's position among the choices: its text (exact, then case-blind), or its letter."""
    choices, gold = problem.choices or [], (problem.gold or "").strip()
    if gold in choices:
        return choices.index(gold)
    folded = [c.strip().lower() for c in choices]
    if gold.lower() in folded:
        return folded.index(gold.lower())
    index = choice_index(gold, len(choices))
    if index is not None:
        return index
    raise DataError(f"problem {problem.id}: gold {problem.gold!r} is not one of the choices {choices}")


def _dataset(data_path: Path) -> dict[str, Any]:
    return {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_path)}},
        "test_split": "test",
        "num_fewshot": 0,
    }


def _multiple_choice_task(name: str, data_path: Path, causal: bool) -> dict[str, Any]:
    return {
        "task": name,
        **_dataset(data_path),
        "output_type": "multiple_choice",
        # feature names: lm-eval reads these fields as they are (no Jinja, which would eat a final newline)
        "doc_to_text": "context",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": label_target("", causal),  # " " + choice for causal students, as eval ranks them
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def _generation_task(
    name: str, data_path: Path, form: PromptFormat, answer_type: str, max_new_tokens: int
) -> dict[str, Any]:
    value = NUMBER if answer_type == "number" else TEXT
    # the method's answer follows its last marker (cotfactory eval splits there); the first value after it
    marker = re.escape(form.marker)
    pattern = f"{marker}(?![\\s\\S]*{marker})\\s*{value}" if form.marker else value
    return {
        "task": name,
        **_dataset(data_path),
        "output_type": "generate_until",
        "doc_to_text": "context",
        "doc_to_target": "gold",
        "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": form.max_gen_toks or max_new_tokens},
        "filter_list": [
            {
                "name": "answer",
                "filter": [
                    {"function": "regex", "regex_pattern": pattern, "group_select": 0},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [EXACT_MATCH],
        "metadata": {"version": 1.0},
    }


def _write_yaml(path: Path, task: dict[str, Any], what: str) -> None:
    import yaml

    header = f"# written by cotfactory: the prompts of the {what}\n"
    write_text_atomic(path, header + yaml.safe_dump(task, sort_keys=False, allow_unicode=True, width=1000))


def _readme(manifest: dict[str, Any], multiple_choice: bool) -> str:
    agreement = (
        "Each choice is scored as a continuation of the student's answer prompt, as `cotfactory eval` ranks them:\n"
        "lm-eval's `acc` is eval's `ranked_accuracy` and `acc_norm` its `ranked_norm_accuracy`; with\n"
        "`--log_samples`, each sample's per-choice log-likelihoods (`filtered_resps`) are `choice_logprobs`\n"
        "in predictions.jsonl.\n"
        if multiple_choice
        else "The student writes its answer greedily from its own prompt; a regex filter reads the answer where the\n"
        "method writes it and `exact_match` compares it with the gold text. `cotfactory eval` matches answers\n"
        "more leniently (numbers numerically, choices by letter too), so its accuracy may be higher.\n"
    )
    note = f"\n**Tokenization differs:** {manifest['tokenization_note']}.\n" if manifest["tokenization_note"] else ""
    return (
        f"# lm-eval task `{manifest['task']}`\n\n"
        f"{manifest['problems']} held-out problems, prompted as `cotfactory eval` prompts the "
        f"{manifest['method']} student `{manifest['student']}`.\n\n"
        f"```bash\nHF_DATASETS_OFFLINE=1 {shell_command(manifest)}\n```\n\n"
        f"{agreement}{note}"
    )
