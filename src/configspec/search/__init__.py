"""Search over the joint configuration space: enumerate, evaluate, constrain, pick, Pareto.

>>> from configspec.search import select
>>> sel = select("examples/profiles", objective="goodput")      # doctest: +SKIP
>>> sel.table.iloc[sel.chosen]                                   # doctest: +SKIP
"""

from configspec.search.evaluate import evaluate_space, link_from_network
from configspec.search.pareto import pareto_mask
from configspec.search.select import (
    CONSTRAINT_KEYS,
    OBJECTIVES,
    Constraints,
    PairBest,
    Selection,
    best_per_pair,
    best_row,
    feasible_mask,
    largest_k_searched,
    pareto_rows,
    parse_constraints,
    pick,
    select,
)
from configspec.search.sensitivity import Crossover, config_label, crossovers, optimum_label
from configspec.search.space import SearchSettings, Space, build_space, load_space

__all__ = [
    "CONSTRAINT_KEYS",
    "OBJECTIVES",
    "Constraints",
    "Crossover",
    "PairBest",
    "SearchSettings",
    "Selection",
    "Space",
    "best_per_pair",
    "best_row",
    "build_space",
    "config_label",
    "crossovers",
    "evaluate_space",
    "feasible_mask",
    "largest_k_searched",
    "link_from_network",
    "load_space",
    "optimum_label",
    "pareto_mask",
    "pareto_rows",
    "parse_constraints",
    "pick",
    "select",
]
