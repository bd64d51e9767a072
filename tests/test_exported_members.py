"""The public surface is a conscious decision: a new export must be added here too."""

import treesearch


def test_public_names() -> None:
    assert sorted(treesearch.__all__) == sorted([
        "AGGREGATORS", "STRATEGIES", "AnswerEquivalence", "Budget", "BudgetExhausted", "BudgetLimits",
        "CallableVerifier", "Candidate", "Choice", "ConfigError", "EndpointError", "Generation",
        "MathEquivalence", "Node", "NodeStatus", "PairwiseEquivalence", "Policy", "Prefix", "Problem",
        "ProblemFileError",
        "SamplingParams", "SearchConfig", "SearchContext", "SearchResult", "SearchTree",
        "StepFormat", "TreeSearchError", "Usage", "Verifier", "VerifierError", "extract_answer",
        "load_problems",
        "make_backend", "run", "search",
        # the compute-optimal layer and its results
        "DifficultyBins", "ModelSizes", "PolicyTable", "fit_policy_table", "label", "predict_votes",
        "read_output",
    ])  # fmt: skip
    for name in treesearch.__all__:
        assert hasattr(treesearch, name)


def test_the_openai_backend_is_registered() -> None:
    policy = treesearch.make_backend("openai", base_url="http://127.0.0.1:1/v1", model="m")
    assert isinstance(policy, treesearch.Policy)
