"""The synthetic task server used by tests, benchmarks and ``treesearch serve-fake``: ``tasks``
(the problems and what the model says about them), ``faults`` (fault kinds and their seeded
draws), ``choices`` (the OpenAI-shaped answer and its stream events), ``app`` (the HTTP
server) and ``launch`` (serving it, or spawning it as a process)."""
