"""The sampling plan: problems × templates × temperatures × seeds × samples → requests.

The plan is a lazy stream in a fixed order (problem-major, so a partial run covers whole problems),
rendered on demand: a run over 100k problems never holds 100k prompts in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cotfactory.prompts import Template
from cotfactory.records import Problem, Request


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
class Plan:
    problems: Sequence[Problem]
    templates: Sequence[Template]
    grid: SamplingGrid
    teacher: str
    model: str
    mode: str = "sample"

    def __len__(self) -> int:
        return len(self.problems) * len(self.templates) * self.grid.per_problem_template

    def requests(self, with_prompts: bool = True) -> Iterator[Request]:
        grid = self.grid
        for problem in self.problems:
            problem_hash = problem.content_hash
            for template in self.templates:
                prompt = template.render(problem) if with_prompts else None
                for temperature in grid.temperatures:
                    for seed in grid.seeds:
                        for index in range(grid.samples_per_setting):
                            yield Request(
                                problem_id=problem.id,
                                problem_hash=problem_hash,
                                template=template.name,
                                template_hash=template.hash,
                                teacher=self.teacher,
                                model=self.model,
                                temperature=temperature,
                                top_p=grid.top_p,
                                seed=seed,
                                max_tokens=grid.max_tokens,
                                sample_index=index,
                                mode=self.mode,
                                prompt=prompt,
                            )

    def request_keys(self) -> Iterator[str]:
        return (request.key for request in self.requests(with_prompts=False))
