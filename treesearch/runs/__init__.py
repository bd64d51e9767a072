"""Runs: the loop over many problems and what rides on it (result rows, labels,
progress, Ray)."""
