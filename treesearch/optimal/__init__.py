"""Compute-optimal scaling above the strategies: difficulty and the fitted policy table
(Snell et al.), and how many calls to spend (Chen et al.)."""
