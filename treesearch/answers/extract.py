"""Final answers: where a solution states one.

The built-in rules, in order: a GSM8K-style closing line ``#### X``; the last of
Minerva's "The final answer is X. I hope it is correct." (wherever it stands) and the
last ``\\boxed{...}`` or ``\\fbox{...}`` (braces balanced; ``\\boxed 5`` takes the token
after it), a box together with the boxes just before it when only "and", "or", commas,
spacing or the next unknown's name separate them (``\\boxed{-2} and \\boxed{1}`` states
the set "-2, 1"); else "The answer is X" only when that is the text's last sentence
and the sentence starts with it ("So", "Thus," and the like may lead in; "I hope it is
correct." may follow). An unclosed last box states nothing, since its text is cut. A
mention in passing ("check whether the answer is an integer") is no answer. Chat end
tokens (``<|im_end|>``, ``</s>``) closing the text are ignored, and text that runs on
into a next few-shot question is cut at the first run-on marker before anything is
looked for. Whether two answers are the same is ``treesearch.answers.equivalence``'s business.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Sequence

RUN_ON_MARKERS: tuple[str, ...] = ("\nQ:", "\nProblem:", "\nQuestion:")

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# What may stand between boxes that state one answer together: spacing, commas, "and", "or",
# the name of the next unknown ("x = \\boxed{1}, y = \\boxed{2}").
_BOX_JOINER = re.compile(
    r"(?:\s|[,;$&]|\\[()\[\],;:! ]|\\q?quad|\b(?:and|or)\b|\\(?:text|mathrm)\{\s*,?\s*(?:and|or)?\s*\}"
    r"|\b[A-Za-z](?:_\{?\w+\}?)?\s*=)*",
    re.IGNORECASE,
)
_GSM8K = re.compile(r"(?:^|\n)####[ \t]*(?P<answer>[^\n]+?)\s*$")
# Minerva's "Final Answer: The final answer is X. I hope it is correct.", read from its end.
_HOPE = re.compile(r"\.?[ \t]*I\s+hope\s+it\s+is\s+correct", re.IGNORECASE)
_FINAL_ANSWER_IS = re.compile(r"final\s+answer\s+is\s*:?\s*", re.IGNORECASE)
_END_TOKEN = re.compile(r"(?:<\|[^<>|\s]{1,40}\|>|</s>|<eos>|<end_of_turn>)$")
_END_TOKEN_CHARS = 48  # where a closing end token can start, from the end
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
    text = _without_end_tokens(text)
    gsm8k = _GSM8K.search(text)
    if gsm8k is not None:
        return _clean(gsm8k.group("answer"))
    boxes = _boxes(text)
    minerva = _minerva(text)
    if minerva is not None and (not boxes or minerva[0] > boxes[-1][0]):
        return _clean(minerva[1])
    if boxes:
        return _boxed_answer(text, boxes)
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


def _without_end_tokens(text: str) -> str:
    """The text without the chat end tokens closing it (``...</s><|im_end|>``)."""
    text = text.rstrip()
    while (token := _END_TOKEN.search(text, max(0, len(text) - _END_TOKEN_CHARS))) is not None:
        text = text[: token.start()].rstrip()
    return text


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


def _boxes(text: str) -> list[tuple[int, int, str | None]]:
    """Each box, outermost only: its start, its end and its text (None when unclosed)."""
    boxes: list[tuple[int, int, str | None]] = []
    for found in _BOX.finditer(text):
        if boxes and found.start() < boxes[-1][1]:
            continue  # inside the previous box
        rest = text[found.end() :]
        if rest[:1].isspace() and not rest.lstrip().startswith("{"):
            token = rest.split(maxsplit=1)
            if token:
                end = found.end() + rest.index(token[0]) + len(token[0])
                boxes.append((found.start(), end, _clean(token[0])))
            continue
        opening = len(rest) - len(rest.lstrip())
        if rest[opening : opening + 1] == "{":
            boxes.append((found.start(), *_braced(text, found.end() + opening)))
    return boxes


def _braced(text: str, opening: int) -> tuple[int, str | None]:
    """The end of the group opened at ``opening`` and its text; the text's end and None if unclosed."""
    depth = 0
    for index in range(opening + 1, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return index + 1, text[opening + 1 : index].strip()
            depth -= 1
    return len(text), None


def _boxed_answer(text: str, boxes: list[tuple[int, int, str | None]]) -> str | None:
    """The last box, with the boxes joined to it; None when it is unclosed or empty."""
    start, _, answer = boxes[-1]
    if not answer:
        return None
    answers = [answer]
    for previous_start, previous_end, previous in reversed(boxes[:-1]):
        if not previous or not _BOX_JOINER.fullmatch(text, previous_end, start):
            break
        answers.append(previous)
        start = previous_start
    return ", ".join(dict.fromkeys(reversed(answers)))


def _minerva(text: str) -> tuple[int, str] | None:
    """Where the last "final answer is X. I hope it is correct." starts, and X."""
    hope = _last(_HOPE.finditer(text))
    if hope is None:
        return None
    line = text.rfind("\n", 0, hope.start()) + 1
    statement = _last(_FINAL_ANSWER_IS.finditer(text, line, hope.start()))
    return None if statement is None else (statement.start(), text[statement.end() : hope.start()])


def _last(found: Iterator[re.Match[str]]) -> re.Match[str] | None:
    last = deque(found, maxlen=1)
    return last[0] if last else None


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
