"""The retry policy of an endpoint: which failures are worth another try, and how long to wait.

Connection errors, timeouts, 429 and 5xx are retried with exponential backoff
and jitter (a 429's or 503's Retry-After wins when the server sends one); any
other 4xx is final. The policy is a value built once per endpoint; the openai
client's own retries are switched off so attempts never multiply.
"""

from __future__ import annotations

from dataclasses import dataclass

import openai
import tenacity
from tenacity import RetryCallState


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    initial_wait_s: float = 0.25
    max_wait_s: float = 20.0
    jitter_s: float = 0.25
    give_up_after_s: float = 120.0

    def retrying(self) -> tenacity.AsyncRetrying:
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
    if isinstance(failure, openai.APIConnectionError):  # timeouts are connection errors too
        return True
    if isinstance(failure, openai.APIStatusError):
        return failure.status_code == 429 or failure.status_code >= 500
    return False


def retry_after(failure: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After or retry-after-ms), if it did."""
    if not isinstance(failure, openai.APIStatusError):
        return None
    headers = failure.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            return None  # an HTTP date: fall back to backoff
    return None
