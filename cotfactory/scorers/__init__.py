"""Reward scorers: a number per (problem, sample), cached in the run's store by scorer identity.

``--reward`` picks one by name: ``answer-gain`` (a local causal LM), ``judge`` (an LLM judge through
a teacher adapter), or any other registered scorer; a value that names none is a path or hub id of a
reward model (``AutoModelForSequenceClassification``). Scorers are imported only when chosen; a new
one is one file plus its registration here (or ``SCORERS.register`` from user code).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotfactory.registry import Registry

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig
    from cotfactory.scorers.base import Scorer

SCORERS: Registry[type[Scorer]] = Registry("scorer")
SCORERS.register("answer-gain", "cotfactory.scorers.answer_gain:AnswerGainScorer")
SCORERS.register("judge", "cotfactory.scorers.judge:JudgeScorer")


def make_scorer(config: FilterConfig) -> Scorer:
    assert config.reward is not None
    if config.reward in SCORERS:
        return SCORERS.get(config.reward)(config)
    from cotfactory.scorers.reward_model import RewardModelScorer  # any other --reward value: a model

    return RewardModelScorer(config)
