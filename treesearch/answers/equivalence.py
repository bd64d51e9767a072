"""When two final answers are the same: grouping a run's answers, checking one against gold.

``MathEquivalence`` settles plain numbers and prose in process and sends the rest to
a small pool of worker processes running math-verify (sympy). Every request there
has a hard time limit; past it the worker is killed, since sympy evaluating
``9^{9^{9}}`` is one C call that no signal interrupts. An answer whose check timed
out counts as unparsed (so different from everything but its own text) and is
logged once, as ``answer_check_timeout`` (``answer_check_failed`` if the worker died).

The rule, one for grouping and grading: ``matches(prediction, gold)`` is true exactly
when ``group([gold, prediction])`` puts the two together. Answers with the same
normalised text are the same. Plain numbers (integers, decimals, thousands
separators, ``a/b``, ``\\frac{a}{b}``) become exact fractions, prose (``\\text{...}``,
alphabetic words of 3+ letters) its lower-cased words. Every other distinct answer is
parsed once, in a worker, into a canonical form (sympy's ``srepr``; a rational
constant becomes its fraction) and its buckets: for an expression, its values at
three fixed rational points per symbol name, rounded to 12 digits; a matrix's
shape; one shared bucket for sets, intervals, tuples and relations, an equation also
being in the bucket of its right side. Answers that share no bucket are different;
a decimal is the number it writes, so ``3.141593`` is not ``\\pi``. Otherwise equal
canonical forms are the same, two fractions are compared exactly, and math-verify is
asked about what is left, with the earlier answer (the gold one, in ``matches``) as
its gold, once per group representative. N answers thus cost N parses and a handful
of math-verify calls, where pairwise checks cost N²/2.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from types import TracebackType
from typing import Protocol

from treesearch.answers.extract import extract_answer
from treesearch.answers.worker import MATH_DELIMITERS, Outcome, WorkerProcess, number_bucket
from treesearch.errors import ConfigError
from treesearch.logs import get_logger

log = get_logger(__name__)


class AnswerEquivalence(Protocol):
    """How a task decides that answers are the same. Both methods block: callers on an
    event loop run them in a worker thread."""

    def group(self, answers: Sequence[str]) -> list[int]:
        """The group index of each answer, groups numbered in order of first appearance."""
        ...

    def matches(self, prediction: str, gold: str) -> bool:
        """Whether the prediction is right."""
        ...


@dataclass(frozen=True, slots=True)
class PairwiseEquivalence:
    """A task's own ``same(prediction, gold)``, for answers that are not math (names,
    choices, program output). Grouping compares a new answer with one representative per
    group, so it is quadratic in the number of distinct answers: keep ``same`` cheap."""

    same: Callable[[str, str], bool]

    def group(self, answers: Sequence[str]) -> list[int]:
        groups: list[int] = []
        representatives: list[str] = []
        seen: dict[str, int] = {}
        for answer in answers:
            group = seen.get(answer)
            if group is None:
                group = next(
                    (i for i, rep in enumerate(representatives) if self.same(rep, answer)),
                    len(representatives),
                )
                if group == len(representatives):
                    representatives.append(answer)
                seen[answer] = group
            groups.append(group)
        return groups

    def matches(self, prediction: str, gold: str) -> bool:
        return prediction == gold or self.same(prediction, gold)


class MathEquivalence:
    """The default equivalence: exact numbers, case-sensitive symbols, math-verify for
    expressions, each worker request bounded by ``timeout_s``.

    Safe to call from several threads at once; at most ``workers`` processes run, started
    on first need (plain numbers and prose never need one). ``close`` stops them.
    """

    def __init__(self, *, timeout_s: float = 2.0, workers: int = 2) -> None:
        if timeout_s <= 0 or workers < 1:
            raise ConfigError(f"answer checks need timeout_s > 0 and workers >= 1: {timeout_s}, {workers}")
        self.timeout_s = timeout_s
        self._workers = [WorkerProcess() for _ in range(workers)]
        self._idle: queue.LifoQueue[WorkerProcess] = queue.LifoQueue()  # the last used is warmest
        for worker in self._workers:
            self._idle.put(worker)
        self._lock = threading.Lock()
        self._verify_calls = 0
        self._given_up: set[tuple[str, ...]] = set()

    @property
    def running(self) -> int:
        """How many worker processes are running now."""
        return sum(worker.running for worker in self._workers)

    @property
    def verify_calls(self) -> int:
        """How many math-verify comparisons were asked for so far."""
        return self._verify_calls

    def group(self, answers: Sequence[str]) -> list[int]:
        form_of = {answer: _Form.of(answer) for answer in dict.fromkeys(answers)}
        distinct: dict[str, _Form] = {}
        for form in form_of.values():
            distinct.setdefault(form.normalized, form)
        with self._lease() as lease:
            keys = [_local_key(form) or self._remote_key(lease, form) for form in distinct.values()]
            group_of = self._merge(lease, list(distinct.values()), keys)
        return [group_of[form_of[answer].normalized] for answer in answers]

    def matches(self, prediction: str, gold: str) -> bool:
        """Whether ``group([gold, prediction])`` puts the two together: one rule for both."""
        gold_group, predicted_group = self.group([gold, prediction])
        return gold_group == predicted_group

    def close(self) -> None:
        """Stop the worker processes, after the calls in flight; a later call starts them again."""
        held = [self._idle.get() for _ in self._workers]
        try:
            for worker in held:
                worker.stop()
        finally:
            for worker in held:
                self._idle.put(worker)

    def __enter__(self) -> MathEquivalence:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _lease(self) -> Iterator[_Lease]:
        lease = _Lease(self)
        try:
            yield lease
        finally:
            if lease.worker is not None:
                self._idle.put(lease.worker)

    def _remote_key(self, lease: _Lease, form: _Form) -> _Key:
        result = lease.ask("key", form.text)
        if isinstance(result, tuple):
            buckets, canon = result
            return _Key(buckets=buckets, canon=canon)
        return _Key(buckets=(("text", form.normalized),), canon=form.normalized)

    def _merge(self, lease: _Lease, forms: list[_Form], keys: list[_Key]) -> dict[str, int]:
        """Group numbers per distinct answer, by the rule in the module docstring."""
        group_of: dict[str, int] = {}
        count = 0
        known: dict[tuple[Hashable, Fraction | str], int] = {}
        representatives: dict[Hashable, list[tuple[int, Fraction | str, str]]] = {}
        for form, key in zip(forms, keys, strict=True):
            group = known.get((key.buckets[0], key.canon))
            if group is None:
                candidates = sorted(
                    {rep for bucket in key.buckets for rep in representatives.get(bucket, ())}
                )
                group = next(
                    (
                        rep_group
                        for rep_group, rep_canon, rep_text in candidates
                        if not (isinstance(rep_canon, Fraction) and isinstance(key.canon, Fraction))
                        and self._verified(lease, rep_text, form.text)
                    ),
                    None,
                )
            if group is None:
                group, count = count, count + 1
                for bucket in key.buckets:
                    representatives.setdefault(bucket, []).append((group, key.canon, form.text))
            known[(key.buckets[0], key.canon)] = group
            group_of[form.normalized] = group
        return group_of

    def _verified(self, lease: _Lease, gold: str, prediction: str) -> bool:
        with self._lock:
            self._verify_calls += 1
        return lease.ask("verify", gold, prediction) is True

    def _give_up(self, outcome: Outcome, texts: tuple[str, ...]) -> None:
        with self._lock:
            if texts in self._given_up:
                return
            self._given_up.add(texts)
        fields = {"answer": _short(texts[-1]), "timeout_s": self.timeout_s}
        if len(texts) == 2:
            fields["gold"] = _short(texts[0])
        log.warning(outcome.value, **fields)

    def _gave_up(self, texts: tuple[str, ...]) -> bool:
        with self._lock:
            return texts in self._given_up


class _Lease:
    """A worker taken from the pool on the first request of one call, for the whole call."""

    def __init__(self, owner: MathEquivalence) -> None:
        self.owner = owner
        self.worker: WorkerProcess | None = None

    def ask(self, op: str, *texts: str) -> object:
        """The worker's answer, or an ``Outcome``. Requests about an answer (or pair) that
        timed out before are not repeated: "verify" is about the pair, the rest about one."""
        if self.owner._gave_up(texts) or (op == "verify" and any(self.owner._gave_up((t,)) for t in texts)):
            return Outcome.TIMEOUT
        if self.worker is None:
            self.worker = self.owner._idle.get()
        result = self.worker.call(self.owner.timeout_s, op, texts)
        if isinstance(result, Outcome):
            self.owner._give_up(result, texts)
        return result


_default: MathEquivalence | None = None
_default_lock = threading.Lock()


def default_equivalence() -> MathEquivalence:
    """The shared ``MathEquivalence`` with default settings, created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathEquivalence()
        return _default


# -- in process ------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^[A-Za-z]\s*=\s*(?=[^=]+$)")  # "x = 4" states 4
# 50\% (or "50 percent") states 50, as math-verify reads it
_PERCENT = re.compile(r"\s*(?:\\?%|\\text\{\s*(?:percent|pct)\s*\}|percent(?:age)?|pct)$")
_GROUPED_COMMA = re.compile(r"\{,\}")  # 14{,}916 is 14,916
_CURRENCY = re.compile(r"\\\$")  # \$10 is 10
_CHOICE = re.compile(r"\(([A-Z])\)")  # (C) is choice C
_TEXT = re.compile(r"\\text\{([^{}]*)\}")
# Spacing goes, except after a comma before three digits: "2, 500" is a pair, "2,500" a number.
_SPACES = re.compile(r"(?<!,)\s+|\\[!,;: ]|(?<=,)\s+(?!\d{3}(?!\d))")
# Prose: words of 3+ letters, each with a lower-case one ("Paris", "Yes"); "ABC" is math.
_WORD = r"(?=[A-Za-z]*[a-z])[A-Za-z]{3,}"
_WORDS = re.compile(rf"{_WORD}(?: {_WORD})*")
_DECIMAL = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|[+-]?\.\d+")
_FRACTION = re.compile(
    r"(?P<sign>[+-]?)(?:\\[dt]?frac\{(?P<a>[+-]?\d+)\}\{(?P<b>[+-]?\d+)\}"
    r"|\\[dt]?frac(?P<c>\d)(?P<d>\d)|(?P<e>[+-]?\d+)/(?P<f>[+-]?\d+))"
)
_CACHED_ANSWERS = 4096
_MAX_NUMBER_CHARS = 1000  # Python refuses to read integers of more than 4300 digits
_LOG_CHARS = 80


@dataclass(frozen=True, slots=True)
class _Form:
    """An answer as math (``text``: no dollars, trailing dot, percent sign, currency sign, nor
    ``x =`` before a plain number) and its comparison key (``normalized``: no spaces or
    ``\\text{}`` wrappers either; case kept). A whole solution (a GSM8K gold "... #### 18",
    a boxed answer) stands for the answer it states."""

    text: str
    normalized: str

    @classmethod
    @lru_cache(maxsize=_CACHED_ANSWERS)  # a vote regroups the same answers as more arrive
    def of(cls, answer: str) -> _Form:
        answer = _CURRENCY.sub("", extract_answer(answer) or answer).strip()
        text = answer.strip("$").strip().rstrip(".").strip()
        if any(mark in text for mark in MATH_DELIMITERS):
            text = answer  # prose around math, or several pieces of it: the worker reads it whole
        text = _PERCENT.sub("", _GROUPED_COMMA.sub(",", text))
        value = _ASSIGNMENT.sub("", text, count=1)
        if value != text and _exact_number(_normalized(value)) is not None:
            text = value  # "x = 4" states 4; other equations stay whole, for math-verify to read
        choice = _CHOICE.fullmatch(_TEXT.sub(r"\1", text).strip())
        if choice is not None:
            text = choice.group(1)
        return cls(text=text, normalized=_normalized(text))


def _normalized(text: str) -> str:
    return _SPACES.sub("", " ".join(_TEXT.sub(r"\1", text).split()))


@dataclass(frozen=True, slots=True)
class _Key:
    """Where an answer may have equals (any of ``buckets``; the first is its own kind) and its
    canonical form."""

    buckets: tuple[Hashable, ...]
    canon: Fraction | str


@lru_cache(maxsize=_CACHED_ANSWERS)
def _local_key(form: _Form) -> _Key | None:
    """The key of a plain number or of prose (or of nothing), without sympy; None for the rest."""
    if not form.normalized:
        return _Key(buckets=(("text", ""),), canon="")
    number = _exact_number(form.normalized)
    if number is not None:
        return _Key(buckets=(number_bucket(number),), canon=number)
    whole_text = _TEXT.fullmatch(form.text)
    words = " ".join((whole_text.group(1) if whole_text else form.text).split())
    if whole_text or _WORDS.fullmatch(words):
        return _Key(buckets=(("prose", words.lower()),), canon=words.lower())
    return None


def _exact_number(text: str) -> Fraction | None:
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    if _DECIMAL.fullmatch(text):
        return Fraction(text.replace(",", ""))
    match = _FRACTION.fullmatch(text)
    if match is None:
        return None
    numerator = match["a"] or match["c"] or match["e"]  # whichever form matched
    denominator = match["b"] or match["d"] or match["f"]
    if int(denominator) == 0:
        return None
    value = Fraction(int(numerator), int(denominator))
    return -value if match["sign"] == "-" else value


def _short(text: str) -> str:
    return text if len(text) <= _LOG_CHARS else text[: _LOG_CHARS - 1] + "…"
