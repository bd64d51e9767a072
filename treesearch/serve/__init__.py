"""``treesearch serve``: an OpenAI-compatible server that runs a search behind every request.

An edge like the command line: it parses an OpenAI request into Problems and a
SearchConfig (``protocol``), calls ``search()`` and renders the results as an ordinary
completion (``app``). ``/v1/chat/completions`` searches on the last user message, with
the system message and earlier turns as the problem's history; ``/v1/completions``
continues the prompt as is; ``/v1/models`` lists the models a request may name.

What to run comes per request, over the server's defaults (its command line):

- the model name ``STRATEGY:N/UPSTREAM_MODEL`` (``beam:16/Qwen2.5-1.5B``; the
  upstream part may be left out), for clients that send nothing else;
- a ``treesearch`` object in the body (``extra_body`` in the openai SDK) with
  SearchConfig fields by name (``strategy``, ``n``, ``beam_width``, ...), the
  budget (``budget_tokens``, ``budget_requests``, ``budget_seconds``) and
  ``sampling`` ("whole" or "steps"); ``temperature``, ``top_p``, ``seed``, ``stop``,
  ``n`` and ``max_tokens`` (or ``max_completion_tokens``) are read from the request.

The server's budget and ``--max-n`` are caps no request exceeds. A choice's content is
its search's chosen path; ``usage`` sums every upstream call the searches made (policy
and verifier, prompt and completion); ``treesearch`` carries the answer, the candidates,
why the search stopped and its calls.
"""

from treesearch.serve.app import SearchServer, Upstream
from treesearch.serve.protocol import Caps, RequestError, parse_request, request_config

__all__ = ["Caps", "RequestError", "SearchServer", "Upstream", "parse_request", "request_config"]
