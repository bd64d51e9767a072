"""The retry policy of an endpoint: which failures are worth another try, and how long to wait.

Connection failures (refused, reset, timed out), 429, 5xx and a 200 whose
body is unusable (cut short, not JSON, no choices) are retried with backoff and
jitter (a Retry-After sent with the error wins); any other 4xx is final. The
policy is a value built once per endpoint; the openai client's own retries are
switched off so attempts never multiply.
"""

from __future__ import annotations

from dataclasses import dataclass

import tenacity
from tenacity import RetryCallState

from .http import ConnectFailure, MalformedAnswer, StatusFailure


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    initial_wait_s: float = 0.25
    max_wait_s: float = 20.0
    jitter_s: float = 0.25
    give_up_after_s: float = 120.0

    def retrying(self) -> tenacity.AsyncRetrying:
        """A tenacity controller; ``.copy()`` it for each call."""
        backoff = tenacity.wait_exponential_jitter(
            multiplier=self.initial_wait_s, max=self.max_wait_s, jitter=self.jitter_s
        )

        def wait(state: RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            after = retry_after(failure) if failure is not None else None
            return min(after, self.max_wait_s) if after is not None else backoff(state)

        return tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(is_retryable),
            wait=wait,
            stop=tenacity.stop_after_attempt(self.attempts) | tenacity.stop_after_delay(self.give_up_after_s),
            reraise=True,
        )


def is_retryable(failure: BaseException) -> bool:
    failure = _cause(failure)
    if isinstance(failure, ConnectFailure | MalformedAnswer):
        return True
    if isinstance(failure, StatusFailure):
        return failure.status == 429 or failure.status >= 500
    return False


def retry_after(failure: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After or retry-after-ms), if it did."""
    failure = _cause(failure)
    if not isinstance(failure, StatusFailure):
        return None
    headers = {name.lower(): value for name, value in failure.headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            return None  # an HTTP date: fall back to backoff
    return None


def _cause(failure: BaseException) -> BaseException:
    """The transport's failure behind an endpoint's (which names the replica it was on)."""
    cause = getattr(failure, "cause", None)
    return cause if isinstance(cause, BaseException) else failure
