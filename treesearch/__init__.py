"""treesearch: test-time compute scaling for language models.

Sampling and voting, verifier-guided tree search and budgets over
OpenAI-compatible endpoints. The Python API in a few lines::

    import treesearch
    from treesearch.backends.openai_compat import OpenAIPolicy

    problems = treesearch.load_problems("problems.jsonl")
    policy = OpenAIPolicy("http://127.0.0.1:8000/v1", "my-model")
    config = treesearch.SearchConfig(strategy="majority-vote", n=16)
    results = await treesearch.run(problems, policy, config, output="out.jsonl")
"""

from treesearch.answers.aggregate import AGGREGATORS, Candidate
from treesearch.answers.equivalence import AnswerEquivalence, MathEquivalence, PairwiseEquivalence
from treesearch.answers.extract import extract_answer
from treesearch.engine.budget import Budget, BudgetLimits, ModelSizes, Usage
from treesearch.engine.config import SearchConfig
from treesearch.engine.context import SearchContext
from treesearch.engine.policy import Choice, Generation, Policy, Prefix, SamplingParams
from treesearch.engine.search import SearchResult
from treesearch.engine.steps import StepFormat
from treesearch.engine.tree import Node, NodeStatus, SearchTree
from treesearch.engine.verify import CallableVerifier, Verifier
from treesearch.errors import (
    BudgetExhausted,
    ConfigError,
    EndpointError,
    ProblemFileError,
    TreeSearchError,
    VerifierError,
)
from treesearch.optimal.advise import predict_votes
from treesearch.optimal.choose import search
from treesearch.optimal.difficulty import DifficultyBins, PolicyTable
from treesearch.optimal.fit import fit_policy_table
from treesearch.problems import Problem, load_problems
from treesearch.registry import make_backend
from treesearch.runs.labels import label
from treesearch.runs.loop import read_output
from treesearch.runs.runner import run
from treesearch.strategies import STRATEGIES

__all__ = [
    "AGGREGATORS",
    "STRATEGIES",
    "AnswerEquivalence",
    "Budget",
    "BudgetExhausted",
    "BudgetLimits",
    "CallableVerifier",
    "Candidate",
    "Choice",
    "ConfigError",
    "DifficultyBins",
    "EndpointError",
    "Generation",
    "MathEquivalence",
    "ModelSizes",
    "Node",
    "NodeStatus",
    "PairwiseEquivalence",
    "Policy",
    "PolicyTable",
    "Prefix",
    "Problem",
    "ProblemFileError",
    "SamplingParams",
    "SearchConfig",
    "SearchContext",
    "SearchResult",
    "SearchTree",
    "StepFormat",
    "TreeSearchError",
    "Usage",
    "Verifier",
    "VerifierError",
    "extract_answer",
    "fit_policy_table",
    "label",
    "load_problems",
    "make_backend",
    "predict_votes",
    "read_output",
    "run",
    "search",
]
