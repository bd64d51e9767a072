"""Every error treesearch raises on purpose.

    TreeSearchError                 base of everything below
    ├── ConfigError                 a setting or argument that cannot work
    ├── ProblemFileError            a problems file's line or row that cannot be read (carries it)
    ├── EndpointError               an endpoint failed for good (carries URL, status, body excerpt)
    ├── VerifierError               a verifier's answer that cannot be scores (NaN, 2.0 from a PRM,
    │                               a path without scores)
    └── BudgetExhausted             a reservation did not fit; internal control flow that ends a
        │                           search gracefully, never shown to a user as a crash
        └── DeadlinePassed          the same, because the wall-clock deadline passed

The command line prints any of them as one line; a traceback is a bug.
"""

from __future__ import annotations


class TreeSearchError(Exception):
    """Base class for the errors treesearch raises on purpose."""


class ConfigError(TreeSearchError):
    """A setting, argument or name (strategy, backend) that cannot work."""


class ProblemFileError(TreeSearchError):
    """A line of a problems file that is not a usable problem (``unit`` "row": a row of a
    CSV, JSON or Parquet file or a datasets folder, counted from 0; line 0 is the whole file)."""

    def __init__(self, path: str, line: int, reason: str, *, unit: str = "line") -> None:
        where = f"{path}:{line}" if unit == "line" else f"{path}: {unit} {line}"
        super().__init__(f"{where}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason
        self.unit = unit


class EndpointError(TreeSearchError):
    """An endpoint answered with an error that retries did not cure, or could not be reached."""

    def __init__(
        self,
        url: str,
        status: int | None,
        detail: str,
        *,
        timed_out: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        """``timed_out``: no answer within the endpoint's timeout; ``retry_after_s``: the wait
        the server asked for with its refusal (Retry-After), if it did."""
        where = f"{url} answered {status}" if status is not None else f"{url} unreachable"
        super().__init__(f"{where}: {detail[:300]}")
        self.url = url
        self.status = status
        self.detail = detail
        self.timed_out = timed_out
        self.retry_after_s = retry_after_s


class VerifierError(TreeSearchError):
    """A verifier returned a score that is not a finite number, one outside [0, 1] from a
    verifier that promises probabilities (or for a caller that needs them), or not one list
    of scores per path; the message names the verifier and what it returned."""


class BudgetExhausted(TreeSearchError):
    """A reservation did not fit in what is left of a budget."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"budget exhausted: {reason}")
        self.reason = reason


class DeadlinePassed(BudgetExhausted):
    """The budget's wall-clock deadline passed before a call could start."""

    def __init__(self) -> None:
        super().__init__("deadline passed")
