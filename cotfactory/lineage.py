"""Lineage of a student's mistakes: what it got wrong, and which training examples it learned from nearby.

For each student of a run (``students/NAME/`` with ``predictions.jsonl`` and ``examples.jsonl``), the
held-out problems it answered wrong are joined to the training examples nearest to them:

- the held-out problem's own examples, when its id also appears in training (it should not: the
  failure is marked ``in_training`` so the report can say so);
- else its lexical neighbours: TF-IDF cosine over word tokens of the question (and its choices) against
  each example's ``source``, best example per training problem, nearest problems first.

Each neighbour is traced back by its ``sample_key`` (the teacher request key) to the teacher sample
(``samples.jsonl``, else the store) and to every filter verdict on it. Data only: ``cotfactory.report``
draws it.
A student without ``examples.jsonl`` or ``predictions.jsonl`` (an older run, or not evaluated) has no
lineage and is left out.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotfactory.records import Sample, Verdict
from cotfactory.run_dir import RunDir, StudentDir, read_jsonl
from cotfactory.store import Store

FAILURES = 8  # wrong problems traced per student
NEIGHBOURS = 3  # training examples per wrong problem

_WORD = re.compile(r"[^\W_]+")


# --- the records ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """One filter's verdict on a teacher sample."""

    filter: str
    kept: bool
    reason: str


@dataclass(frozen=True)
class TeacherSample:
    """The teacher sample a training example was made from (a line of ``samples.jsonl``)."""

    key: str
    problem_id: str
    text: str
    rationale: str
    answer: str | None
    temperature: float | None
    seed: int | None


@dataclass(frozen=True)
class TrainedExample:
    """A line of the student's ``examples.jsonl``."""

    task: str
    source: str
    target: str
    problem_id: str
    sample_key: str  # "" when the rationale came from a dataset, not a teacher
    weight: float


@dataclass(frozen=True)
class StudentAnswer:
    """A line of the student's ``predictions.jsonl``: one held-out problem and what the student said."""

    problem_id: str
    question: str
    choices: tuple[str, ...] | None
    gold: str | None
    prediction: str | None
    rationale: str
    correct: bool
    ranked: str | None  # multiple choice: the choice of highest log-likelihood
    ranked_correct: bool | None  # None when the problem is not multiple choice


@dataclass(frozen=True)
class Neighbour:
    """A training example near a wrong held-out problem, with the teacher sample and verdicts behind it."""

    example: TrainedExample
    similarity: float  # TF-IDF cosine of the held-out question against the example's source
    same_problem: bool  # the example was made from the held-out problem itself
    sample: TeacherSample | None  # None: a dataset rationale, or a key found neither in samples.jsonl nor the store
    verdicts: tuple[Judgement, ...]


@dataclass(frozen=True)
class Failure:
    prediction: StudentAnswer
    in_training: bool  # the held-out problem's id is also among the training examples' (a leak)
    neighbours: tuple[Neighbour, ...]


@dataclass(frozen=True)
class StudentErrors:
    student: str
    total: int  # held-out problems
    wrong: int  # answered wrong (generation)
    ranked_wrong: int | None  # wrong by log-likelihood ranking; None unless every problem is multiple choice
    examples: int  # training examples searched
    failures: tuple[Failure, ...]  # the first wrong problems, in predictions order


# --- the teacher side -------------------------------------------------------------------------------------


@dataclass
class TeacherIndex:
    """Teacher samples and their verdicts, by request key. With ``run``, a key that ``samples`` lacks
    (the plan changed since the student was trained) is looked up in the run's store."""

    samples: dict[str, TeacherSample]
    verdicts: dict[str, tuple[Judgement, ...]]
    run: RunDir | None = None

    @classmethod
    def from_rows(
        cls, rows: Iterable[dict[str, Any]], verdicts: Iterable[Verdict], run_dir: Path | None = None
    ) -> TeacherIndex:
        """From ``samples.jsonl`` rows and the store's verdicts (what the report has already read)."""
        by_key: dict[str, list[Judgement]] = defaultdict(list)
        for verdict in verdicts:
            by_key[verdict.sample_key].append(Judgement(verdict.filter, verdict.keep, verdict.reason))
        samples = {row["key"]: _sample_from_row(row) for row in rows if row.get("key")}
        run = None if run_dir is None else RunDir(run_dir)
        return cls(samples, {key: tuple(judged) for key, judged in by_key.items()}, run)

    @classmethod
    def load(cls, run_dir: Path) -> TeacherIndex:
        """From the run directory; a missing file leaves its part empty."""
        run = RunDir(run_dir)
        rows = list(read_jsonl(run.samples)) if run.samples.exists() else []
        verdicts: list[Verdict] = []
        if run.has_store():
            with Store.in_run(run.path) as store:
                verdicts = store.verdicts()
        return cls.from_rows(rows, verdicts, run.path)

    def complete(self, keys: Iterable[str]) -> None:
        """Add the samples of ``keys`` missing from ``samples`` from the store, when there is one."""
        missing = sorted({key for key in keys if key and key not in self.samples})
        if not missing or self.run is None or not self.run.has_store():
            return
        with Store.in_run(self.run.path) as store:
            for sample in store.samples(missing):
                self.samples[sample.key] = _sample_from_store(sample)


def _sample_from_row(row: dict[str, Any]) -> TeacherSample:
    temperature, seed = row.get("temperature"), row.get("seed")
    return TeacherSample(
        key=row["key"],
        problem_id=str(row.get("problem_id") or ""),
        text=row.get("text") or "",
        rationale=row.get("rationale") or "",
        answer=row.get("answer"),
        temperature=None if temperature is None else float(temperature),
        seed=None if seed is None else int(seed),
    )


def _sample_from_store(sample: Sample) -> TeacherSample:
    return TeacherSample(
        key=sample.key,
        problem_id=sample.request.problem_id,
        text=sample.text,
        rationale=sample.rationale,
        answer=sample.answer,
        temperature=sample.request.temperature,
        seed=sample.request.seed,
    )


# --- the student side -------------------------------------------------------------------------------------


def _example_from_row(row: dict[str, Any]) -> TrainedExample:
    return TrainedExample(
        task=str(row.get("task") or ""),
        source=row.get("source") or "",
        target=row.get("target") or "",
        problem_id=str(row.get("problem_id") or ""),
        sample_key=row.get("sample_key") or "",
        weight=float(row.get("weight", 1.0)),
    )


def _answer_from_row(row: dict[str, Any]) -> StudentAnswer:
    choices = row.get("choices")
    ranked_correct = row.get("ranked_correct")
    return StudentAnswer(
        problem_id=str(row.get("problem_id") or ""),
        question=row.get("question") or "",
        choices=tuple(choices) if choices else None,
        gold=row.get("gold"),
        prediction=row.get("prediction"),
        rationale=row.get("rationale") or "",
        correct=bool(row.get("correct")),
        ranked=row.get("ranked"),
        ranked_correct=None if ranked_correct is None else bool(ranked_correct),
    )


# --- nearest examples -------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits; punctuation and underscores split)."""
    return _WORD.findall(text.lower())


class TfIdf:
    """Cosine similarity of TF-IDF vectors over word tokens, with an inverted index: a query touches only
    the documents that share a word with it. Smoothed idf, ``ln((1 + n) / (1 + df)) + 1``, as scikit-learn."""

    def __init__(self, documents: list[str]):
        counts = [Counter(words(document)) for document in documents]
        frequency = Counter(word for count in counts for word in count)
        n = len(documents)
        self.idf = {word: math.log((1 + n) / (1 + df)) + 1 for word, df in frequency.items()}
        self.postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for index, count in enumerate(counts):
            for word, weight in self._unit(count).items():
                self.postings[word].append((index, weight))

    def _unit(self, count: Counter[str]) -> dict[str, float]:
        weights = {word: tf * self.idf[word] for word, tf in count.items() if word in self.idf}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {word: w / norm for word, w in weights.items()} if norm else {}

    def similarities(self, query: str) -> dict[int, float]:
        """Document index → cosine similarity, for every document sharing at least one word with ``query``."""
        scores: dict[int, float] = defaultdict(float)
        for word, weight in self._unit(Counter(words(query))).items():
            for index, document_weight in self.postings[word]:
                scores[index] += weight * document_weight
        return dict(scores)


class _Examples:
    """A student's training examples, searchable by question."""

    def __init__(self, examples: list[TrainedExample]):
        self.examples = examples
        self.by_problem: dict[str, list[int]] = defaultdict(list)
        self.by_source: dict[str, list[int]] = defaultdict(list)  # many examples share a source
        for index, example in enumerate(examples):
            self.by_problem[example.problem_id].append(index)
            self.by_source[example.source].append(index)
        self.sources = list(self.by_source)
        self.tfidf = TfIdf(self.sources)

    def nearest(self, answer: StudentAnswer, k: int) -> tuple[bool, list[tuple[int, float, bool]]]:
        """Whether the problem is among the training examples, and up to ``k`` (example index, similarity,
        same problem): its own examples when it is, else the best example of each of the ``k`` nearest problems."""
        scores = self.tfidf.similarities(" ".join([answer.question, *(answer.choices or ())]))
        similarity = {i: score for s, score in scores.items() for i in self.by_source[self.sources[s]]}
        own = self.by_problem.get(answer.problem_id, []) if answer.problem_id else []
        if own:
            ranked = sorted(own, key=lambda i: _preference(self.examples[i]), reverse=True)  # stable
            return True, [(i, similarity.get(i, 0.0), True) for i in ranked[:k]]
        best: dict[str, tuple[float, bool, int, int]] = {}  # problem → (similarity, *preference, -index)
        for index, score in similarity.items():
            if score <= 0.0:
                continue
            example = self.examples[index]
            group = example.problem_id or f"source:{example.source}"
            candidate = (round(score, 9), *_preference(example), -index)
            best[group] = max(best.get(group, candidate), candidate)
        order = sorted(best.values(), key=lambda c: (-c[0], -c[3]))  # nearest first; ties in training order
        return False, [(-c[3], similarity[-c[3]], False) for c in order[:k]]


def _preference(example: TrainedExample) -> tuple[bool, int]:
    """Among examples of one problem equally near: one made from a teacher sample, then the longest target
    (the rationale rather than the bare label)."""
    return (bool(example.sample_key), len(example.target))


# --- tracing ----------------------------------------------------------------------------------------------


def trace_student(
    folder: Path | StudentDir,
    teacher: TeacherIndex,
    *,
    failures: int = FAILURES,
    neighbours: int = NEIGHBOURS,
) -> StudentErrors | None:
    """The first ``failures`` wrong predictions of the student in ``folder``, each with its nearest training
    examples traced to the teacher; None when the folder lacks examples.jsonl or predictions.jsonl."""
    student = folder if isinstance(folder, StudentDir) else StudentDir(folder)
    if not has_lineage(student):
        return None
    answers = [_answer_from_row(row) for row in read_jsonl(student.predictions)]
    examples = _Examples([_example_from_row(row) for row in read_jsonl(student.examples)])
    wrong = [answer for answer in answers if not answer.correct]
    ranked = [answer.ranked_correct for answer in answers]
    found = [(answer, *examples.nearest(answer, neighbours)) for answer in wrong[:failures]]
    teacher.complete(examples.examples[i].sample_key for _, _, nearest in found for i, _, _ in nearest)
    traced = tuple(
        Failure(
            answer,
            in_training,
            tuple(_neighbour(examples.examples[i], score, same, teacher) for i, score, same in nearest),
        )
        for answer, in_training, nearest in found
    )
    return StudentErrors(
        student=student.path.name,
        total=len(answers),
        wrong=len(wrong),
        ranked_wrong=sum(not r for r in ranked) if answers and None not in ranked else None,
        examples=len(examples.examples),
        failures=traced,
    )


def _neighbour(example: TrainedExample, similarity: float, same: bool, teacher: TeacherIndex) -> Neighbour:
    key = example.sample_key
    return Neighbour(
        example=example,
        similarity=similarity,
        same_problem=same,
        sample=teacher.samples.get(key) if key else None,
        verdicts=teacher.verdicts.get(key, ()) if key else (),
    )


def has_lineage(student: StudentDir) -> bool:
    """The student's folder holds both what it learned from (examples.jsonl, since train-student wrote it)
    and what it answered (predictions.jsonl, once evaluated)."""
    return student.examples.is_file() and student.predictions.is_file()


def students_with_lineage(run_dir: Path) -> list[StudentDir]:
    """The students of the run, by name, that have a lineage. ``untrained/`` inside a student folder is that
    student's baseline, not a student."""
    return [student for student in RunDir(run_dir).students() if has_lineage(student)]


def trace_run(
    run_dir: Path,
    teacher: TeacherIndex | None = None,
    *,
    failures: int = FAILURES,
    neighbours: int = NEIGHBOURS,
) -> list[StudentErrors]:
    """The lineage of every student of the run that has one; ``[]`` for a run without (nothing else is read
    then). ``teacher`` defaults to the run's samples.jsonl and verdicts."""
    students = students_with_lineage(run_dir)
    if not students:
        return []
    teacher = teacher if teacher is not None else TeacherIndex.load(Path(run_dir))
    traced = (trace_student(s, teacher, failures=failures, neighbours=neighbours) for s in students)
    return [t for t in traced if t is not None]
