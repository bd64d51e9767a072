"""Final answers: where a solution states one, and when two are the same.

Extraction takes the last ``\\boxed{...}`` (braces balanced) or else the last
"The answer is X". Equivalence for math goes through math-verify (sympy), with
a normalised-string comparison first and as the fallback; tasks with other
answers pass their own ``same(a, b)``. math-verify's parsing is blocking CPU
work: callers on the event loop run ``group_answers`` in a worker thread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

Equivalence = Callable[[str, str], bool]

_ANSWER_IS = re.compile(r"answer is\s*:?\s*", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"-?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?")
_MAX_PARSED = 200  # longer strings are compared as text: sympy on prose can take seconds


def extract_answer(text: str) -> str | None:
    """The final answer a solution states, or None."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip() or None
    matches = list(_ANSWER_IS.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0].strip()
    rest = re.sub(r"\.\s.*$", "", rest)  # first sentence only
    rest = rest.rstrip(". ").strip().strip("$").strip()
    return rest or None


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for index in range(begin, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            if depth == 0:
                return text[begin:index]
            depth -= 1
    return None


def normalize(answer: str) -> str:
    """A plain comparison key: no spaces, dollars, trailing dot, ``\\text{}`` wrapper or leading ``x=``."""
    key = answer.strip().strip("$").strip()
    key = re.sub(r"\\text\{(.*?)\}", r"\1", key)
    key = re.sub(r"\s+|\\!|\\,|\\ ", "", key)
    key = re.sub(r"^[a-zA-Z]=", "", key)
    return key.rstrip(".").lower()


# math-verify logs a warning on every call made without its signal-based timeout,
# which only works on the main thread; we bound input length instead.
logging.getLogger("math_verify").setLevel(logging.ERROR)


@lru_cache(maxsize=4096)
def _parsed(answer: str) -> Any:
    from math_verify import parse

    return parse(f"${answer}$", parsing_timeout=None)


def math_equal(a: str, b: str) -> bool:
    """True when two answers are the same number or expression (math-verify), or the same text."""
    left_key, right_key = normalize(a), normalize(b)
    if left_key == right_key:
        return True
    numbers = _number(left_key), _number(right_key)
    if numbers[0] is not None and numbers[1] is not None:  # the common case, without sympy
        return abs(numbers[0] - numbers[1]) <= 1e-9 * max(1.0, abs(numbers[0]))
    if len(a) > _MAX_PARSED or len(b) > _MAX_PARSED:
        return False
    from math_verify import verify

    left, right = _parsed(a), _parsed(b)
    if not left or not right:
        return False
    return bool(verify(left, right, timeout_seconds=None))


def _number(key: str) -> float | None:
    if not _PLAIN_NUMBER.fullmatch(key):
        return None
    return float(key.replace(",", ""))


def group_answers(answers: Sequence[str], same: Equivalence = math_equal) -> list[int]:
    """The group index of each answer: equal normalised strings first, then ``same`` between
    group representatives. Groups are numbered in order of first appearance."""
    groups: list[int] = []
    representatives: list[str] = []
    by_key: dict[str, int] = {}
    for answer in answers:
        key = normalize(answer)
        group = by_key.get(key)
        if group is None:
            group = next(
                (i for i, rep in enumerate(representatives) if same(rep, answer)),
                len(representatives),
            )
            if group == len(representatives):
                representatives.append(answer)
            by_key[key] = group
        groups.append(group)
    return groups
