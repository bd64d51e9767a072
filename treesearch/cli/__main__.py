"""``python -m treesearch.cli``: the command line, as the ``treesearch`` script runs it."""

import sys

from treesearch.cli.main import main

sys.exit(main())
