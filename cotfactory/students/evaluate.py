"""``cotfactory eval``: run a trained student on held-out problems and score it with the answer module.

Each method's reader (``methods/``) asks in the prompt format it was trained on and turns the student's
text into a final answer; students that write a rationale are also checked for whether the rationale's own
conclusion is the answer they give.

Multiple-choice problems are also scored the way lm-evaluation-harness scores them: each choice is a
continuation of the method's answer prompt (after the student's own rationale, for Fine-tune-CoT), and
the choice with the highest log-likelihood is the answer (``ranked``), or the highest per character
(``ranked_norm``, lm-eval's ``acc_norm``). A student that learned the task but not the answer format
still scores there; one that learned only the format does not.

A model spec without ``student.json`` (``embedded``, a folder, a .gguf file) is evaluated *untrained*,
in the label-only format: the "before" of every student trained from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cotfactory import answers
from cotfactory.errors import ConfigError
from cotfactory.problems import load_problems
from cotfactory.records import Problem
from cotfactory.run_dir import StudentDir, read_jsonl, write_json_atomic, write_jsonl_atomic
from cotfactory.stats import format_accuracy, wilson_interval
from cotfactory.students.methods import UNTRAINED_METHOD, Prediction, check_method

__all__ = ["EvalResult", "Prediction", "Student", "read_student", "run_eval"]


class Student:
    """A student ready to write and to score continuations, causal or seq2seq.

    ``folder`` is a folder made by train-student, or any model spec (untrained: label-only format)."""

    def __init__(self, folder: str | Path, batch_size: int = 16, max_new_tokens: int = 256, explain: bool = True):
        import torch

        self.batch_size, self.max_new_tokens, self.explain = batch_size, max_new_tokens, explain
        if StudentDir(folder).is_student():
            self.info = read_student(folder)
            self.model, self.tokenizer = _load(Path(folder), self.info)
        else:
            self.model, self.tokenizer, self.info = _load_untrained(str(folder))
        self.causal = bool(self.info["causal"])
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()

    def write(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy continuations, batched (longest first, so a batch pads little)."""
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        texts = [""] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            written = self._write_batch([prompts[i] for i in chunk], max_new_tokens or self.max_new_tokens)
            for i, text in zip(chunk, written, strict=True):
                texts[i] = text
        return texts

    def _write_batch(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch

        tokenizer = self.tokenizer
        tokenizer.padding_side = "left" if self.causal else "right"
        encoded = [self.encode_prompt(p) for p in prompts]
        batch = tokenizer.pad({"input_ids": encoded}, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        if self.causal:
            output = output[:, batch["input_ids"].shape[1] :]
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in output]

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt exactly as training encoded a source (a causal prompt never ends in EOS)."""
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        if self.causal and ids and ids[-1] == self.tokenizer.eos_token_id:
            ids = ids[:-1]
        if not self.causal and ids and ids[-1] != self.tokenizer.eos_token_id:
            ids = ids + [self.tokenizer.eos_token_id]
        return ids

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        """log p(continuation | context) for each pair, summed over the continuation's tokens.

        Causal: tokenized as lm-evaluation-harness does (trailing spaces of the context move to the
        continuation; the whole text is encoded once and split at the context's length; lm-eval
        0.4.13 matches with ``add_bos_token`` set as ``lm_eval_tasks`` writes it). Pairs that share a
        context (a problem's choices) read it once and score their continuations from its KV cache.
        Seq2seq: the context is the encoder input, the continuation the decoder's output."""
        encoded = [self._encode_pair(context, continuation) for context, continuation in pairs]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (context, _) in enumerate(encoded):
            groups.setdefault(tuple(context), []).append(i)
        contexts = sorted(groups, key=len, reverse=True)
        scores = [0.0] * len(encoded)
        for start in range(0, len(contexts), self.batch_size):
            chunk = contexts[start : start + self.batch_size]
            items = [(list(context), [encoded[i][1] for i in groups[context]]) for context in chunk]
            scored = self._score_shared(items) if self.causal else self._score_seq2seq(items)
            for context, values in zip(chunk, scored, strict=True):
                for i, value in zip(groups[context], values, strict=True):
                    scores[i] = value
        return scores

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not self.causal:
            ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            return self.encode_prompt(context), ids
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        context_ids = self.encode_prompt(context)
        whole = self.encode_prompt(context + continuation)
        return context_ids, whole[len(context_ids) :]

    def _score_shared(self, items: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """Causal: each context once (left-padded, cached), then all its continuations from the cache."""
        import torch

        pad = self.tokenizer.pad_token_id or 0
        width = max(len(context) for context, _ in items)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for b, (context, _) in enumerate(items):  # left padding: every context ends at the last column
            ids[b, width - len(context) :] = torch.tensor(context)
            mask[b, width - len(context) :] = 1
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(self.device),
                use_cache=True,
                logits_to_keep=1,
            )
            cache = getattr(out, "cache", None) or out.past_key_values
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1).cpu()  # predicts each continuation's 1st
            rows = [(b, continuation) for b, (_, continuations) in enumerate(items) for continuation in continuations]
            scores = [float(first[b, continuation[0]]) for b, continuation in rows]
            longest = max(len(continuation) for _, continuation in rows) - 1
            if longest > 0:  # feed each continuation but its last token; read the log-probs of the rest
                index = torch.tensor([b for b, _ in rows])
                cache.reorder_cache(index.to(self.device))
                feed = torch.full((len(rows), longest), pad, dtype=torch.long)
                feed_mask = torch.zeros((len(rows), longest), dtype=torch.long)
                for r, (_, continuation) in enumerate(rows):
                    feed[r, : len(continuation) - 1] = torch.tensor(continuation[:-1], dtype=torch.long)
                    feed_mask[r, : len(continuation) - 1] = 1
                starts = mask.sum(-1)[index][:, None]
                logits = self.model(
                    input_ids=feed.to(self.device),
                    attention_mask=torch.cat([mask[index], feed_mask], dim=1).to(self.device),
                    position_ids=(starts + torch.arange(longest)[None, :]).to(self.device),
                    **{self._cache_argument: cache},
                    use_cache=True,
                ).logits.float()
                logprobs = torch.log_softmax(logits, dim=-1).cpu()
                for r, (_, continuation) in enumerate(rows):
                    rest = torch.tensor(continuation[1:], dtype=torch.long)
                    scores[r] += float(logprobs[r, : len(rest)].gather(-1, rest[:, None]).sum())
        out_scores: list[list[float]] = []
        values = iter(scores)
        for _, continuations in items:
            out_scores.append([next(values) for _ in continuations])
        return out_scores

    @cached_property
    def _cache_argument(self) -> str:
        """transformers 5.x names a forward's KV cache ``cache`` (``past_key_values`` is deprecated); 4.x
        knows only ``past_key_values``."""
        import inspect

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def _score_seq2seq(self, items: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        import torch

        from cotfactory.students.features import IGNORE, _pad

        rows = [(context, continuation) for context, continuations in items for continuation in continuations]
        pad = self.tokenizer.pad_token_id
        start = getattr(self.model.config, "decoder_start_token_id", None) or pad
        with torch.inference_mode():
            logits = self.model(
                input_ids=_pad([c for c, _ in rows], pad).to(self.device),
                attention_mask=_pad([[1] * len(c) for c, _ in rows], 0).to(self.device),
                decoder_input_ids=_pad([[start] + x[:-1] for _, x in rows], pad).to(self.device),
            ).logits.float()
        logprobs = torch.log_softmax(logits, dim=-1).cpu()
        labels = _pad([x for _, x in rows], IGNORE)
        picked = logprobs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        flat = iter(float(row[label != IGNORE].sum()) for row, label in zip(picked, labels, strict=True))
        return [[next(flat) for _ in continuations] for _, continuations in items]


def read_student(folder: str | Path) -> dict[str, Any]:
    """A student folder's student.json: its method and how to load it."""
    path = StudentDir(folder).info
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; train a student with `cotfactory train-student` first") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None


def _load_untrained(spec: str) -> tuple[Any, Any, dict[str, Any]]:
    from cotfactory.students.models import load_student

    model, tokenizer, causal = load_student(spec)
    info = {"method": UNTRAINED_METHOD, "causal": causal, "adapter": False, "base": spec, "untrained": True}
    return model, tokenizer, info


def _load(folder: Path, info: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from cotfactory.model_loading import quiet_transformers

    quiet_transformers()
    auto = AutoModelForCausalLM if info["causal"] else AutoModelForSeq2SeqLM
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not info["adapter"]:
        return auto.from_pretrained(folder), tokenizer
    from peft import PeftModel

    base = auto.from_pretrained(info["base"])
    return PeftModel.from_pretrained(base, folder), tokenizer


@dataclass
class EvalResult:
    method: str
    total: int
    correct: int
    rationale_agreement: float | None
    rationale_accuracy: float | None
    predictions_path: Path
    ranked_correct: int | None = None
    ranked_norm_correct: int | None = None
    untrained: bool = False

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def lines(self, name: str | None = None) -> list[str]:
        """What eval prints: each accuracy with its 95 % interval; ``name`` labels the lines (default: the
        method)."""
        label = f"{name or self.method}{' (untrained)' if self.untrained else ''}"
        out = [f"{label}: accuracy {format_accuracy(self.correct, self.total)}"]
        if self.ranked_correct is not None:
            out.append(f"{label}: choices ranked by log-likelihood {format_accuracy(self.ranked_correct, self.total)}")
        if self.ranked_norm_correct is not None:
            out.append(f"{label}: … per character {format_accuracy(self.ranked_norm_correct, self.total)}")
        if self.rationale_agreement is not None:
            out.append(f"{label}: rationale reaches its answer {self.rationale_agreement:.1%}")
        return out

    def summary(self) -> dict[str, Any]:
        """eval.json's numbers: every accuracy with its 95 % Wilson interval."""
        numbers: dict[str, Any] = {
            "method": self.method,
            "untrained": self.untrained,
            "total": self.total,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "interval": list(wilson_interval(self.correct, self.total)),
            "rationale_agreement": self.rationale_agreement,
            "rationale_accuracy": self.rationale_accuracy,
        }
        for name, count in (("ranked", self.ranked_correct), ("ranked_norm", self.ranked_norm_correct)):
            if count is not None:
                numbers[f"{name}_correct"] = count
                numbers[f"{name}_accuracy"] = count / self.total if self.total else 0.0
                numbers[f"{name}_interval"] = list(wilson_interval(count, self.total))
        return numbers


PROBLEMS_PER_STEP = 4  # batches' worth of problems predicted between two updates of the running accuracy


def predict_with_progress(predict: Any, student: Any, problems: list[Problem]) -> list[Prediction]:
    """The method's predictions, a few batches of problems at a time, under a transient bar on stderr
    that shows the problems done and the running accuracy with its 95 % interval."""
    step = max(1, student.batch_size * PROBLEMS_PER_STEP)
    predictions: list[Prediction] = []
    progress = Progress(
        TextColumn("[bold]eval"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[accuracy]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with progress:
        task = progress.add_task("eval", total=len(problems), accuracy="")
        for start in range(0, len(problems), step):
            predictions += predict(student, problems[start : start + step])
            correct = sum(p.correct for p in predictions)
            low, high = wilson_interval(correct, len(predictions))
            accuracy = f"accuracy {correct / len(predictions):.3f} [{low:.3f}, {high:.3f}]"
            progress.update(task, completed=len(predictions), accuracy=accuracy)
    return predictions


def run_eval(
    folder: str,
    format: str,
    input: str,
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    out: str | None = None,
    answer_type: str | None = None,
    explain: bool = True,
    in_context: int | None = None,
) -> EvalResult:
    """Evaluate a student folder (or, untrained, any model spec) on held-out problems. Writes
    predictions.jsonl and eval.json (beside ``out``, default FOLDER/)."""
    problems = load_problems(format, input, limit=limit, answer_type=answer_type)
    trained = StudentDir(folder)
    if not trained.is_student() and out is None:
        raise ConfigError(
            f"{trained.info}: not found; train a student with `cotfactory train-student` first, "
            "or give --out to evaluate a model untrained"
        )
    name = read_student(folder)["method"] if trained.is_student() else UNTRAINED_METHOD
    predict = check_method(name, f"{folder}: ").predict  # before the model is loaded
    assert predict is not None  # check_method refuses a method without one
    student: Any = Student(folder, batch_size, max_new_tokens, explain)
    student = _with_demonstrations(student, trained, name, in_context)
    predictions = predict_with_progress(predict, student, problems)
    agreements = [a for a in (p.rationale_agrees for p in predictions) if a is not None]
    rationale_correct = [c for c in (p.rationale_correct for p in predictions) if c is not None]
    path = Path(out) if out else trained.predictions
    write_jsonl_atomic(path, (_prediction_row(p) for p in predictions))
    ranked = [p for p in predictions if p.ranked is not None]
    all_ranked = bool(predictions) and len(ranked) == len(predictions)
    result = EvalResult(
        name,
        len(predictions),
        sum(p.correct for p in predictions),
        sum(agreements) / len(agreements) if agreements else None,
        sum(rationale_correct) / len(rationale_correct) if rationale_correct else None,
        path,
        sum(_matches(p.ranked, p.problem) for p in ranked) if all_ranked else None,
        sum(_matches(p.ranked_norm, p.problem) for p in ranked) if all_ranked else None,
        bool(student.info.get("untrained")),
    )
    write_json_atomic(StudentDir(path.parent).evaluation, {"input": input, **result.summary()})  # beside ``out``
    for scored in (StudentDir(path.parent), StudentDir(path.parent.parent)):  # a student, or its untrained/
        if scored.is_student():
            from cotfactory.students.model_card import write_model_card

            write_model_card(scored.path)
            break
    return result


def _with_demonstrations(student: Student, trained: StudentDir, method: str, k: int | None) -> Any:
    """The student asked with K of its own training examples before each prompt (in-context
    distillation): K as given, else as it was trained. Demonstrations come from its training examples,
    which share no problem with a held-out split; of the method's answer task (its first by name)."""
    from cotfactory.students.in_context import InContextStudent, pick_demonstrations
    from cotfactory.students.methods.base import TrainingExample

    trained_k = student.info.get("config", {}).get("in_context", 0)  # student.json, read when it loaded
    k = trained_k if k is None else k
    if not k:
        return student
    if not trained.examples.is_file():
        raise ConfigError(f"{trained.examples}: --in-context needs the student's training examples")
    examples = [TrainingExample(**row) for row in read_jsonl(trained.examples)]
    answering = sorted(check_method(method).answer_at_end) or [None]
    return InContextStudent(student, pick_demonstrations(examples, k, answering[0], seed=0))


def _matches(answer: str | None, problem: Problem) -> bool:
    return answers.answers_match(answer, problem.gold, problem)


def _prediction_row(p: Prediction) -> dict[str, Any]:
    """One line of predictions.jsonl; ``problem_id`` joins it to the training examples and the teacher."""
    return {
        "problem_id": p.problem.id,
        "question": p.problem.question,
        "choices": p.problem.choices,
        "gold": p.problem.gold,
        "prediction": p.answer,
        "rationale": p.rationale,
        "text": p.text,
        "correct": p.correct,
        "ranked": p.ranked,
        "ranked_correct": None if p.ranked is None else _matches(p.ranked, p.problem),
        "ranked_norm": p.ranked_norm,
        "choice_logprobs": p.choice_logprobs,
        "rationale_agrees": p.rationale_agrees,
        "rationale_correct": p.rationale_correct,
    }
