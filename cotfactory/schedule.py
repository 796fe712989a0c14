"""Which requests a run makes, problem by problem, decided from its store: the grid, or adaptive
sampling's prefix of each problem's sequence, then — with ``--rationalize-failures`` — one
rationalization request for each problem whose samples all missed the gold answer.

Everything here is a pure function of the plan and the stored samples, recomputed on every wave: a
stopped run resumes to the same final set, and a finished one has nothing pending.
"""

from __future__ import annotations

from collections.abc import Iterator

from cotfactory.adaptive import StoppingRule, adaptive_prefix
from cotfactory.answers import answers_match
from cotfactory.plan import Plan
from cotfactory.prompts import Template
from cotfactory.records import Problem, Request
from cotfactory.store import Store

_CHUNK = 500  # request keys looked up in the store at a time


class Schedule:
    def __init__(
        self,
        plan: Plan,
        store: Store,
        logprobs_k: int = 0,
        rule: StoppingRule | None = None,
        rationalize: Template | None = None,
    ):
        self.plan, self.store, self.logprobs_k = plan, store, logprobs_k
        self.rule, self.rationalize = rule, rationalize

    @property
    def one_wave(self) -> bool:
        """Whether the plan is the grid alone: once each of its pending requests is stored (failed ones
        too), nothing is pending. Adaptive sampling and rationalization decide more from what is stored;
        with --logprobs a reply without distributions is sent again."""
        return self.rule is None and self.rationalize is None and not self.logprobs_k

    def problem_requests(self, problem: Problem, with_prompts: bool = True) -> list[Request]:
        """The problem's requests as far as its stored samples decide them now."""
        if self.rule is None:
            requests = list(self.plan.problem_requests(problem, with_prompts))
        else:
            requests = adaptive_prefix(self.plan, self.rule, self.store, problem, with_prompts)
        if self.rationalize is not None and self._all_missed(problem, requests):
            requests.append(self.plan.rationalize_request(problem, self.rationalize, with_prompts))
        return requests

    def _all_missed(self, problem: Problem, requests: list[Request]) -> bool:
        """Whether every one of the problem's samples is stored and none reached its gold answer."""
        if problem.gold is None:
            return False
        samples = list(self.store.samples([r.key for r in requests]))
        return len(samples) == len(requests) and not any(
            answers_match(s.answer, problem.gold, problem) for s in samples
        )

    def pending(self, with_prompts: bool = True) -> Iterator[Request]:
        """This wave: the requests the store lacks (or holds without distributions of this --logprobs K:
        sent again, the reply replaces the sample), asked of the store a chunk at a time."""
        chunk: list[Request] = []
        for problem in self.plan.problems:
            chunk += self.problem_requests(problem, with_prompts)
            if len(chunk) >= _CHUNK:
                yield from self._lacking(chunk)
                chunk = []
        yield from self._lacking(chunk)

    def _lacking(self, requests: list[Request]) -> Iterator[Request]:
        done = self.store.done_among([r.key for r in requests], self.logprobs_k) if requests else set()
        return (r for r in requests if r.key not in done)

    def request_keys(self) -> Iterator[str]:
        """The keys of every problem's requests, in plan order (after the last wave: the run's samples)."""
        for problem in self.plan.problems:
            yield from (r.key for r in self.problem_requests(problem, with_prompts=False))
