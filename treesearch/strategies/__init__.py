"""The strategy registry: a name maps to a search routine and its default aggregator.

A routine is ``async (SearchContext, SearchConfig) -> None``: it grows the tree
and keeps ``ctx.candidates``, the finished nodes to aggregate, up to date (left
None: every finished node); the engine scores and aggregates them. ``best_n``
strategies may finish more than N paths and offer the N best-scored; a strategy that
``scores_itself`` (DeepConf by confidence; self-certainty and borda by self-certainty)
aggregates by score without a verifier. Names are the command line's ``--strategy`` values.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.errors import ConfigError
from treesearch.strategies.ab_mcts import ab_mcts
from treesearch.strategies.beam import beam, dvts, lookahead
from treesearch.strategies.certainty import self_certainty
from treesearch.strategies.deepconf import deepconf
from treesearch.strategies.early_vote import early_vote
from treesearch.strategies.genselect import gen_select
from treesearch.strategies.mcts import mcts
from treesearch.strategies.particles import particle_filter
from treesearch.strategies.rebase import rebase
from treesearch.strategies.revisions import revisions
from treesearch.strategies.rsa import rsa
from treesearch.strategies.sampling import sample, sample_to_judge

Routine = Callable[[SearchContext, SearchConfig], Awaitable[None]]


@dataclass(frozen=True, kw_only=True, slots=True)
class Strategy:
    """``run`` None: the strategy chooses another for each problem, above the engine
    (``adaptive``: ``treesearch.optimal.choose``)."""

    run: Routine | None
    aggregator: str
    needs_verifier: bool = False
    best_n: bool = False
    scores_itself: bool = False


STRATEGIES: dict[str, Strategy] = {
    "majority-vote": Strategy(run=sample, aggregator="majority"),
    "best-of-n": Strategy(run=sample, aggregator="best", needs_verifier=True),
    "weighted-vote": Strategy(run=sample, aggregator="weighted", needs_verifier=True),
    "filter-vote": Strategy(run=sample_to_judge, aggregator="filter", needs_verifier=True),
    "beam": Strategy(run=beam, aggregator="weighted", needs_verifier=True, best_n=True),
    "lookahead": Strategy(run=lookahead, aggregator="weighted", needs_verifier=True, best_n=True),
    "dvts": Strategy(run=dvts, aggregator="weighted", needs_verifier=True, best_n=True),
    "rebase": Strategy(run=rebase, aggregator="weighted", needs_verifier=True),
    "mcts": Strategy(run=mcts, aggregator="weighted", needs_verifier=True),
    "revisions": Strategy(run=revisions, aggregator="hierarchical"),
    "early-vote": Strategy(run=early_vote, aggregator="majority"),
    "deepconf": Strategy(run=deepconf, aggregator="weighted", scores_itself=True),
    "self-certainty": Strategy(run=self_certainty, aggregator="best", scores_itself=True),
    "borda": Strategy(run=self_certainty, aggregator="borda", scores_itself=True),
    "particle-filter": Strategy(run=particle_filter, aggregator="weighted", needs_verifier=True),
    "ab-mcts": Strategy(run=ab_mcts, aggregator="best", needs_verifier=True),
    # Keep the knock-out's winner (or, cut short, its survivors) as the candidates.
    "gen-select": Strategy(run=gen_select, aggregator="majority"),
    "rsa": Strategy(run=rsa, aggregator="majority"),
    # Runs, and aggregates by the rule of, the strategy its policy table chose for each problem.
    "adaptive": Strategy(run=None, aggregator="majority"),
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
