"""``treesearch demo``: test-time compute at work, offline, in under a minute.

Starts the synthetic task server, gives it problems of three difficulties (the
right answer is the most likely one, a coin flip, or less likely than a wrong
one) and runs majority vote at growing K, printing accuracy and tokens: votes
lift easy problems towards 100% and sink hard ones towards 0%, as Chen et al.
describe.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from treesearch.config import SearchConfig
from treesearch.policy import SamplingParams
from treesearch.problems import Problem
from treesearch.runner import run

# name: (probability of the right answer, number of wrong answers sharing the rest)
DIFFICULTIES = {"easy": (0.7, 1), "medium": (0.4, 3), "hard": (0.4, 1)}
PER_DIFFICULTY = 40
VOTES = (1, 5, 25)


async def demo() -> int:
    from treesearch.backends.fake_server import make_problems, spawn
    from treesearch.backends.openai_compat import OpenAIPolicy

    records = [
        record
        for name, (p_correct, wrong) in DIFFICULTIES.items()
        for record in make_problems(PER_DIFFICULTY, p_correct=p_correct, wrong=wrong, prefix=name)
    ]
    problems = [Problem.from_record(record) for record in records]
    print("majority vote on the synthetic server: accuracy (tokens per problem)")
    print(f"{'K':>4}  " + "  ".join(f"{name:>16}" for name in DIFFICULTIES))
    with (
        tempfile.TemporaryDirectory() as workdir,
        spawn(["--latency", "0.02"], problems=records, workdir=Path(workdir)) as url,
    ):
        policy = OpenAIPolicy(url, "fake")
        try:
            for votes in VOTES:
                config = SearchConfig(strategy="majority-vote", n=votes, sampling=SamplingParams(seed=0))
                results = await run(problems, policy, config)
                cells = []
                for name in DIFFICULTIES:
                    mine = [r for r in results if r.problem_id.startswith(name)]
                    accuracy = sum(bool(r.correct) for r in mine) / len(mine)
                    tokens = sum(r.usage.total_tokens for r in mine) / len(mine)
                    cells.append(f"{accuracy:6.2f} ({tokens:6.0f})")
                print(f"{votes:>4}  " + "  ".join(f"{cell:>16}" for cell in cells))
        finally:
            await policy.aclose()
    return 0
