"""The synthetic task server used by tests, benchmarks and ``treesearch serve-fake``."""
