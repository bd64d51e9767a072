"""How old the problem is that a request works for: the order a run admitted it in.

A run sets ``problem_order`` in each problem's task; tasks copy their context, so every
request its search sends carries it, and the endpoint reads it when its slots are all
taken: the oldest problem's requests are served first. Problems then finish in about
the order they started and rows arrive at a steady rate, rather than every admitted
problem advancing a step at a time in lockstep and none finishing until all do.
Requests outside a run carry 0 and are served first come, first served.
"""

from __future__ import annotations

from contextvars import ContextVar

problem_order: ContextVar[int] = ContextVar("treesearch_problem_order", default=0)
