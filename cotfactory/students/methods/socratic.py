"""Socratic CoT (Shridhar et al. 2023), in its two forms.

``socratic``: a decomposer (question → its sub-questions, one per line) and a solver (question +
earlier pairs + next sub-question → sub-answer), in one model told apart by their prefixes
(``DECOMPOSE``, ``SOLVE``). ``socratic-unified``: one pass writes every sub-question with its answer
(``STEP_SEPARATOR`` between them, one per line), then its answer statement.
"""

from __future__ import annotations

from cotfactory import answers
from cotfactory.records import Problem
from cotfactory.students.methods import Method, MethodSettings, Prediction, PromptFormat, TrainingExample
from cotfactory.students.methods.base import ANSWER_IS, ANSWER_MARKER, StudentLike, factual, write_and_extract
from cotfactory.students.records import TeachingRecord, format_question

DECOMPOSE = "decompose: "
SOLVE = "solve: "
STEP_SEPARATOR = " ** "  # "sub-question ** sub-answer", as the teachers' Socratic rationales write them
MAX_SOCRATIC_STEPS = 8  # the most sub-questions a student's plan is solved for
SUB_ANSWER_TOKENS = 64


def solver_source(question: str, solved: list[tuple[str, str]], next_question: str) -> str:
    """The Socratic solver's input: the problem, the sub-questions answered so far, the next one."""
    lines = [question]
    lines += [f"Q: {q} A: {a}" for q, a in solved]
    lines.append(f"Q: {next_question} A:")
    return SOLVE + "\n".join(lines)


def steps_text(steps: list[tuple[str, str]]) -> str:
    return "\n".join(f"{q}{STEP_SEPARATOR}{a}" for q, a in steps)


def build(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """Sub-questions without known answers train the decomposer only, and one solver example maps the
    question and all its sub-questions to the final answer."""
    examples = []
    for r in factual(records):
        if not r.subquestions:
            continue
        question = format_question(r.question, r.choices)
        plan = [q for q, _ in r.subquestions]
        examples.append(TrainingExample("decompose", DECOMPOSE + question, "\n".join(plan), problem_id=r.problem_id))
        if all(answer is not None for _, answer in r.subquestions):
            solved: list[tuple[str, str]] = []
            for sub_question, sub_answer in r.subquestions:
                source = solver_source(question, solved, sub_question)
                examples.append(TrainingExample("solve", source, str(sub_answer), problem_id=r.problem_id))
                solved.append((sub_question, str(sub_answer)))
        else:  # sub-answers unknown (StrategyQA): answer the question from its plan
            lines = "\n".join(f"Q: {q}" for q in plan)
            examples.append(
                TrainingExample(
                    "solve",
                    f"{SOLVE}{question}\n{lines}\n{ANSWER_IS}",
                    f" {r.answer}",
                    problem_id=r.problem_id,
                )
            )
    return examples


def predict(student: StudentLike, problems: list[Problem]) -> list[Prediction]:
    """Decompose, then solve the sub-questions in turn (all problems batched per step); the last
    sub-answer is the answer. At most MAX_SOCRATIC_STEPS sub-questions per problem."""
    questions = [format_question(p.question, p.choices) for p in problems]
    plans = [
        [line.strip() for line in text.splitlines() if line.strip()][:MAX_SOCRATIC_STEPS]
        for text in student.write([DECOMPOSE + q for q in questions])
    ]
    solved: list[list[tuple[str, str]]] = [[] for _ in problems]
    for step in range(MAX_SOCRATIC_STEPS):
        active = [i for i, plan in enumerate(plans) if step < len(plan)]
        if not active:
            break
        replies = student.write(
            [solver_source(questions[i], solved[i], plans[i][step]) for i in active], SUB_ANSWER_TOKENS
        )
        for i, reply in zip(active, replies, strict=True):
            solved[i].append((plans[i][step], reply))
    out = []
    for problem, steps in zip(problems, solved, strict=True):
        text = steps_text(steps)
        last = steps[-1][1] if steps else ""
        answer = answers.extract(last, problem)[1] if last else None
        out.append(Prediction(problem, answer, text, text))
    return out


def build_unified(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    examples = []
    for r in factual(records):
        if not r.subquestions or any(a is None for _, a in r.subquestions):
            continue
        steps = steps_text([(q, str(a)) for q, a in r.subquestions])
        examples.append(
            TrainingExample(
                "unified",
                format_question(r.question, r.choices),
                f"{steps}\n{ANSWER_IS} {r.answer}.",
                problem_id=r.problem_id,
            )
        )
    return examples


def unified_prompt(problem: Problem, causal: bool = True) -> str:
    return format_question(problem.question, problem.choices)


def predict_unified(student: StudentLike, problems: list[Problem]) -> list[Prediction]:
    return write_and_extract(student, problems, [unified_prompt(p) for p in problems])


METHOD = Method("socratic", build, predict, answer_at_end=frozenset({"solve"}))
UNIFIED = Method(
    "socratic-unified",
    build_unified,
    predict_unified,
    answer_at_end=frozenset({"unified"}),
    single_prompt=PromptFormat(unified_prompt, False, ANSWER_MARKER),
)
