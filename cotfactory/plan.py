"""The sampling plan: problems × templates × temperatures × seeds × samples → requests.

The plan is a lazy stream in a fixed order (problem-major, so a partial run covers whole problems),
rendered on demand: a run over 100k problems never holds 100k prompts in memory. Its problems may be a
list or a ``ProblemFile`` (read from the input file on each pass), so neither do they have to be held.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cotfactory.decoders.tree_search import TreeSettings
from cotfactory.perturb import Perturbation, display_answer, perturbed_answer
from cotfactory.problems import ProblemFile
from cotfactory.prompts import Template
from cotfactory.records import Problem, RenderedPrompt, Request


@dataclass(frozen=True)
class SamplingGrid:
    temperatures: Sequence[float]
    seeds: Sequence[int]
    samples_per_setting: int = 1
    top_p: float = 1.0
    max_tokens: int = 256

    @property
    def per_problem_template(self) -> int:
        return len(self.temperatures) * len(self.seeds) * self.samples_per_setting


@dataclass(frozen=True)
class Contrast:
    """SCOTT contrastive decoding settings (the hf teacher only)."""

    weight: float = 0.5
    plausibility: float | None = None
    perturb: Perturbation = "auto"
    counterfactual: bool = False


@dataclass(frozen=True)
class Plan:
    problems: Sequence[Problem] | ProblemFile
    templates: Sequence[Template]
    grid: SamplingGrid
    teacher: str
    model: str
    contrast: Contrast | None = None
    search: TreeSettings | None = None  # step-level tree search: each setting is a tree of ``beam`` candidates

    def __len__(self) -> int:
        per_setting = 2 if self.contrast and self.contrast.counterfactual else 1
        if self.search is not None:
            per_setting = self.search.beam
        return len(self.problems) * len(self.templates) * self.grid.per_problem_template * per_setting

    def requests(self, with_prompts: bool = True) -> Iterator[Request]:
        for problem in self.problems:
            yield from self.problem_requests(problem, with_prompts)

    def problem_requests(self, problem: Problem, with_prompts: bool = True) -> Iterator[Request]:
        """One problem's requests of the grid, in plan order."""
        grid = self.grid
        problem_hash = problem.content_hash
        for template in self.templates:
            prompt = template.render(problem) if with_prompts and not self.contrast else None
            for temperature in grid.temperatures:
                for seed in grid.seeds:
                    for index in range(grid.samples_per_setting):
                        request = self._request(problem_hash, problem, template, temperature, seed, index, prompt)
                        if self.contrast is not None:
                            yield from self._contrastive(request, problem, template, with_prompts)
                        elif self.search is not None:
                            yield from self._tree(request, self.search)
                        else:
                            yield request

    def rationalize_request(self, problem: Problem, template: Template, with_prompts: bool = True) -> Request:
        """The request for a rationale of the gold answer (``mode="rationalized"``), at the grid's first
        temperature and seed."""
        prompt = template.render(problem) if with_prompts else None
        request = self._request(
            problem.content_hash, problem, template, self.grid.temperatures[0], self.grid.seeds[0], 0, prompt
        )
        return request.model_copy(update={"mode": "rationalized"})

    def sample_sequence(self, problem: Problem, with_prompts: bool = True) -> Iterator[Request]:
        """A problem's requests sample index first, without end: index 0 of every (template,
        temperature, seed), then index 1 of each, … — the order adaptive sampling draws them in. The
        first ``per_problem_template × templates`` are the grid's own requests (same keys)."""
        problem_hash = problem.content_hash
        prompts = {t.name: t.render(problem) if with_prompts else None for t in self.templates}
        for index in itertools.count():
            for template in self.templates:
                for temperature in self.grid.temperatures:
                    for seed in self.grid.seeds:
                        prompt = prompts[template.name]
                        yield self._request(problem_hash, problem, template, temperature, seed, index, prompt)

    def _request(
        self,
        problem_hash: str,
        problem: Problem,
        template: Template,
        temperature: float,
        seed: int,
        index: int,
        prompt: RenderedPrompt | None,
    ) -> Request:
        return Request(
            problem_id=problem.id,
            problem_hash=problem_hash,
            template=template.name,
            template_hash=template.hash,
            teacher=self.teacher,
            model=self.model,
            temperature=temperature,
            top_p=self.grid.top_p,
            seed=seed,
            max_tokens=self.grid.max_tokens,
            sample_index=index,
            prompt=prompt,
        )

    def _contrastive(
        self, request: Request, problem: Problem, template: Template, with_prompts: bool
    ) -> Iterator[Request]:
        """The factual request (rationale for gold, contrasted against a perturbed answer) and, when
        asked, its counterfactual (rationale for the perturbed answer, contrasted against gold)."""
        contrast = self.contrast
        assert contrast is not None and problem.gold is not None
        wrong = perturbed_answer(problem, contrast.perturb, request.sample_seed)
        pairs = [("contrastive", problem.gold, wrong)]
        if contrast.counterfactual:
            pairs.append(("counterfactual", wrong, problem.gold))
        for mode, target, other in pairs:
            decoding = {
                "target_answer": target,
                "contrast_answer": other,
                "weight": contrast.weight,
                "plausibility": contrast.plausibility,
                "perturb": contrast.perturb,
            }
            prompts = {}
            if with_prompts:
                prompts = {
                    "prompt": template.render(problem, extra={"answer": display_answer(problem, target)}),
                    "contrast": template.render(problem, extra={"answer": display_answer(problem, other)}),
                }
            yield request.model_copy(update={"mode": mode, "decoding": decoding, **prompts})

    @staticmethod
    def _tree(request: Request, search: TreeSettings) -> Iterator[Request]:
        """One request per candidate rank of the setting's tree; the teacher searches the tree once."""
        for rank in range(search.beam):
            yield request.model_copy(update={"mode": "tree", "decoding": {**search.as_decoding(), "candidate": rank}})

    def request_keys(self) -> Iterator[str]:
        return (request.key for request in self.requests(with_prompts=False))
