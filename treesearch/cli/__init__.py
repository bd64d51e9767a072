"""The command line: ``main`` and its shared options, and one module per command."""
