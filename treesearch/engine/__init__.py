"""The engine: the search of one problem (search, its context, budget, tree, the Policy
and Verifier protocols, the configuration and what a step is)."""
