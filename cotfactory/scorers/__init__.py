"""Reward scorers: a number per (problem, sample), cached in the run's store by scorer identity.

``--reward`` picks one: ``answer-gain`` (a local causal LM), ``judge`` (an LLM judge through any
teacher adapter), or anything else — a path or hub id of a reward model
(``AutoModelForSequenceClassification``). Scorers are imported only when chosen.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cotfactory.filter_config import FilterConfig
    from cotfactory.scorers.base import Scorer

#: --reward value → module defining ``SCORER``; any other value is a reward-model path or hub id.
SCORERS = {
    "answer-gain": "cotfactory.scorers.answer_gain",
    "judge": "cotfactory.scorers.judge",
}
REWARD_MODEL = "cotfactory.scorers.reward_model"


def make_scorer(config: FilterConfig) -> Scorer:
    assert config.reward is not None
    module = importlib.import_module(SCORERS.get(config.reward, REWARD_MODEL))
    return module.SCORER(config)
