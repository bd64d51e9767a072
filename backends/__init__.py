"""Adapters that implement treesearch's Policy and Verifier protocols.

Shipped as ``treesearch.backends``. The registry in ``treesearch.registry`` finds
them by name through the ``treesearch.backends`` entry-point group, so a
third-party adapter is a package that declares an entry point, not a fork.
"""
