"""Filters, by the name a config's ``chain`` uses. A new filter is one file plus its registration here
(or ``FILTERS.register`` from user code); it builds itself from the filter config (``from_config``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotfactory.registry import Registry

if TYPE_CHECKING:
    from cotfactory.filters.base import Filter

FILTERS: Registry[type[Filter]] = Registry("filter")
FILTERS.register("well_formed", "cotfactory.filters.well_formed:WellFormed")
FILTERS.register("rationalized", "cotfactory.filters.rationalized:Rationalized")
FILTERS.register("correct", "cotfactory.filters.correct:Correct")
FILTERS.register("consistency", "cotfactory.filters.consistency:Consistency")
FILTERS.register("reward", "cotfactory.filters.reward:Reward")
FILTERS.register("dedup", "cotfactory.filters.dedup:Dedup")
