"""Final answers: where a solution states one.

The built-in rules take the last ``\\boxed{...}`` (braces balanced) or ``\\boxed 5``
(the token after it), or else "The answer is X" only when that is the text's last
sentence and the sentence starts with it ("So", "Thus," and the like may lead in;
Minerva's "I hope it is correct." may follow). A mention in passing ("check whether
the answer is an integer") is no answer. Text that runs on into a next few-shot
question is cut at the first run-on marker before anything is looked for. Whether
two answers are the same is ``treesearch.equivalence``'s business.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

RUN_ON_MARKERS: tuple[str, ...] = ("\nQ:", "\nProblem:", "\nQuestion:")

_BOXED = "\\boxed"
# A sentence ends at . ! or ? followed by whitespace, or at a line break; "3.5" is one token.
_SENTENCE_ENDS = ("\n", ". ", "! ", "? ", ".\t", "!\t", "?\t")
_TRAILER = re.compile(r"\s*I hope it is correct\.?$", re.IGNORECASE)  # Minerva's, after the answer
_STATEMENT = re.compile(
    r"(?:(?:so|thus|therefore|hence)\b,?\s*|final\s+answer\s*:\s*)?"
    r"(?:the\s+)?(?:final\s+)?answer(?:\s+is\s*:?|\s*:)\s*(?P<answer>.+)",
    re.IGNORECASE | re.DOTALL,
)
_CLOSING_NUMBER = re.compile(
    r"(?<![\w.])(-?\\frac\{\d+\}\{\d+\}|-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?)\s*[.!]?\s*$"
)


def split_run_on(text: str, markers: Sequence[str] = RUN_ON_MARKERS) -> tuple[str, bool]:
    """The text before the first run-on marker, and whether there was one."""
    cuts = [index for index in (text.find(marker) for marker in markers if marker) if index >= 0]
    if not cuts:
        return text, False
    return text[: min(cuts)], True


def extract_answer(text: str, pattern: str | re.Pattern[str] | None = None) -> str | None:
    """The final answer a solution states, or None. Text from the first of the default
    ``RUN_ON_MARKERS`` on is ignored.

    ``pattern`` replaces the built-in rules: its last match states the answer, in the
    group named ``answer`` if it has one, else in group 1, else in the whole match.
    """
    text, _ = split_run_on(text)
    if pattern is not None:
        return _by_pattern(text, re.compile(pattern))
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    return _stated(text)


def extract_final_value(text: str, pattern: str | re.Pattern[str] | None = None) -> str | None:
    """For a model-judged completion: the stated answer, else the number (integer, decimal or
    simple fraction) that closes the last non-empty line ("12 + 5 = 17."), else None: never
    prose, nor a step's label ("Step 3: the total is large.")."""
    answer = extract_answer(text, pattern)
    if answer is not None:
        return answer
    lines = [line for line in split_run_on(text)[0].splitlines() if line.strip()]
    closing = _CLOSING_NUMBER.search(lines[-1]) if lines else None
    return closing.group(1) if closing else None


def _clean(answer: str | None) -> str | None:
    if answer is None:
        return None
    answer = answer.strip().strip("$").strip().rstrip(".").strip().strip("$").strip()
    if answer.startswith(("\\(", "\\[")) and answer.endswith(("\\)", "\\]")):
        answer = answer[2:-2].strip()
    return answer or None


def _by_pattern(text: str, pattern: re.Pattern[str]) -> str | None:
    matches = list(pattern.finditer(text))
    if not matches:
        return None
    last = matches[-1]
    if "answer" in pattern.groupindex:
        return _clean(last.group("answer"))
    return _clean(last.group(1) if pattern.groups else last.group(0))


def _last_boxed(text: str) -> str | None:
    """The last ``\\boxed`` answer; None when there is none or the last one is unclosed."""
    start = text.rfind(_BOXED)
    if start < 0:
        return None
    rest = text[start + len(_BOXED) :]
    if rest[:1].isspace() and not rest.lstrip().startswith("{"):
        token = rest.split(maxsplit=1)
        return _clean(token[0]) if token else None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for index, char in enumerate(rest[1:], start=1):
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return rest[1:index].strip() or None
            depth -= 1
    return None


def _stated(text: str) -> str | None:
    """X from "The answer is X" when that is the last sentence and starts with it."""
    text = text.strip()
    ends_correct = text[-8:].lower().rstrip(".").endswith("correct")
    trailer = _TRAILER.search(text, max(0, len(text) - 40)) if ends_correct else None
    if trailer is not None:
        text = text[: trailer.start()].strip()
    start = max(text.rfind(end) + len(end) if end in text else 0 for end in _SENTENCE_ENDS)
    match = _STATEMENT.fullmatch(text[start:].strip())
    if match is None:
        return None
    answer = match.group("answer").rstrip()
    return _clean(answer[:-1] if answer.endswith(("!", "?")) else answer)
