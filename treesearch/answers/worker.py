"""The process that runs math-verify (sympy) for ``MathEquivalence``, and its handle.

A worker is a plain ``python`` subprocess running ``serve``, in a session
of its own (so Ctrl-C at a terminal goes to the run, not to it), never a
multiprocessing child, which would re-run the caller's unguarded script. It
answers pickled ``(op, args)`` requests on one pipe and writes results on
another; when the request pipe closes, as when its parent exits, it exits.
``WorkerProcess.call`` waits at most a time limit and kills the worker past it:
sympy evaluating ``9^{9^{9}}`` is one C call that no signal interrupts.

The rounding rule is shared with the parent, which keys plain numbers itself.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Hashable
from enum import Enum
from fractions import Fraction
from functools import lru_cache
from multiprocessing.connection import Connection
from typing import Any

from treesearch.errors import TreeSearchError


class Outcome(Enum):
    """A request without an answer; the value is the event logged."""

    TIMEOUT = "answer_check_timeout"
    CRASHED = "answer_check_failed"


_BOOT = "import sys; from treesearch.answers.worker import serve; serve(int(sys.argv[1]), int(sys.argv[2]))"
_START_TIMEOUT_S = 120.0  # imports only, on a loaded machine; each request has its own limit


class WorkerProcess:
    """One worker, started on first use; after a timeout, a fresh one starts at once so the
    next request finds it warming up. The pool hands it to one thread at a time."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Connection | None = None
        self._answers: Connection | None = None
        self._ready = False

    @property
    def running(self) -> bool:
        return self._process is not None

    def call(self, timeout_s: float, op: str, args: tuple[str, ...]) -> object:
        """The worker's answer (None when it could not parse or compare), or an Outcome."""
        requests, answers = self._channels()
        try:
            requests.send((op, args))
            if not answers.poll(timeout_s):
                self.stop()
                self._spawn()
                return Outcome.TIMEOUT
            status, value = answers.recv()
        except (EOFError, OSError):  # the worker died (out of memory, say)
            self.stop()
            return Outcome.CRASHED
        return value if status == "ok" else None

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        for channel in (self._requests, self._answers):
            if channel is not None:
                channel.close()
        self._process, self._requests, self._answers, self._ready = None, None, None, False

    def _channels(self) -> tuple[Connection, Connection]:
        if self._requests is None or self._answers is None:
            self._requests, self._answers = self._spawn()
        if not self._ready:
            try:
                self._ready = self._answers.poll(_START_TIMEOUT_S) and self._answers.recv() == "ready"
            except (EOFError, OSError):
                self._ready = False
            if not self._ready:
                self.stop()
                raise TreeSearchError("the answer-check worker did not start (is math-verify installed?)")
        return self._requests, self._answers

    def _spawn(self) -> tuple[Connection, Connection]:
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(request_read), str(answer_write)],
                pass_fds=(request_read, answer_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(request_read)
            os.close(answer_write)
        self._requests = Connection(request_write, readable=False)
        self._answers = Connection(answer_read, writable=False)
        return self._requests, self._answers


# -- the rounding both sides share ---------------------------------------------------

POINTS = 3  # the values of an expression at this many points form its bucket key
DIGITS = 12
ZERO = Fraction(1, 10**20)  # smaller values round to 0: sin²x + cos²x - 1 evaluates to ~1e-31
MATH_DELIMITERS = ("$", "\\(", "\\[")  # an answer still holding one is read as math-verify reads text


def number_bucket(value: Fraction) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("values", ((rounded(value), "0"),) * POINTS)


def rounded(value: Fraction) -> str:
    """``value`` to ``DIGITS`` significant digits, as text; the same in every process."""
    if abs(value) < ZERO:
        return "0"
    sign, value = ("-" if value < 0 else ""), abs(value)
    bits = value.numerator.bit_length() - value.denominator.bit_length()
    exponent = math.floor(bits * math.log10(2))
    while value >= Fraction(10) ** (exponent + 1):
        exponent += 1
    while value < Fraction(10) ** exponent:
        exponent -= 1
    digits = round(value / Fraction(10) ** (exponent - DIGITS + 1))
    if digits == 10**DIGITS:
        digits, exponent = digits // 10, exponent + 1
    return f"{sign}{digits}e{exponent}"


# -- in the worker process ------------------------------------------------------------
# Everything below runs only in the worker: sympy and math-verify are imported there.

_PRECISION = 30
_MAX_FRACTION_BITS = 4096  # larger rationals are bucketed by value; the parent never rounds them
_HUGE = 10**1000


def serve(requests_fd: int, answers_fd: int) -> None:
    """A worker's loop: answer ``(op, args)`` requests until the request pipe closes."""
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    _keep_symbol_case()
    _verify("x+1", "1+x")  # import and warm up before the first timed request
    _key("x+1")
    requests = Connection(requests_fd, writable=False)
    answers = Connection(answers_fd, readable=False)
    answers.send("ready")
    while True:
        try:
            op, args = requests.recv()
        except EOFError:
            return
        try:
            answers.send(("ok", _OPS[op](*args)))
        except Exception as exc:  # a parse or verify failure means "unparsed", not a dead worker
            answers.send(("error", f"{type(exc).__name__}: {exc}"[:200]))


def _keep_symbol_case() -> None:
    """math-verify parses with latex2sympy's ``lowercase_symbols`` on and offers no switch,
    so ``2A`` would equal ``2a``; a worker swaps in the same converter with it off."""
    from functools import partial

    from latex2sympy2_extended.latex2sympy2 import ConversionConfig, latex2sympy
    from math_verify import parser

    parser.latex2sympy = partial(latex2sympy, conversion_config=ConversionConfig(lowercase_symbols=False))


@lru_cache(maxsize=4096)
def _parse(text: str) -> tuple[Any, ...]:
    """The answer as math; one still holding math delimiters is prose around math, read as
    math-verify reads a solution (its last math)."""
    from math_verify import parse

    delimited = any(mark in text for mark in MATH_DELIMITERS)
    return tuple(parse(text if delimited else f"${text}$", parsing_timeout=None))


@lru_cache(maxsize=4096)  # a vote regroups the same answers as more arrive
def _verify(gold: str, prediction: str) -> bool:
    from math_verify import verify

    expected, predicted = _parse(gold), _parse(prediction)
    if not expected or not predicted or _case_clash(_symbols(expected), _symbols(predicted)):
        return False
    return bool(verify(list(expected), list(predicted), timeout_seconds=None))


def _case_clash(left: set[str], right: set[str]) -> bool:
    """A symbol on one side whose name appears on the other only in another case: math-verify
    lower-cases longer symbol names, so it would take \\Sigma for \\sigma."""
    folded = ({name.lower() for name in right}, {name.lower() for name in left})
    return any(name not in right and name.lower() in folded[0] for name in left) or any(
        name not in left and name.lower() in folded[1] for name in right
    )


def _symbols(parsed: tuple[Any, ...]) -> set[str]:
    from sympy import Basic

    return {str(symbol) for item in parsed if isinstance(item, Basic) for symbol in item.free_symbols}


@lru_cache(maxsize=4096)
def _key(text: str) -> tuple[tuple[Hashable, ...], Fraction | str] | None:
    """The answer's buckets and canonical form (see ``treesearch.answers.equivalence``), or None when it
    does not parse, or parses only to nonsense: ``12:00`` reads as 12/0, and every such
    answer would share that one canonical form.

    A number or an expression has one bucket, its values; a matrix one per shape; sets,
    intervals, tuples and relations share one. An equation is also in the bucket of its
    right side, since math-verify reads a predicted ``f(x) = 1`` against a gold ``1`` as 1."""
    from sympy import Basic, ImmutableMatrix, MatrixBase, S, srepr
    from sympy.matrices.expressions import MatrixExpr

    parsed = _parse(text)
    value = parsed[0] if parsed else None
    if isinstance(value, MatrixExpr):  # a sum or product of matrices: its value
        value = value.doit()
    if isinstance(value, MatrixBase):
        return (("matrix", value.shape),), srepr(ImmutableMatrix(value))
    if not isinstance(value, Basic) or value.has(S.ComplexInfinity, S.NaN):
        return None
    if _is_expression(value):
        return _expression_key(value)
    buckets: tuple[Hashable, ...] = (("other",),)
    right = _right_side(value)
    if right is not None and _is_expression(right):
        buckets += _expression_key(right)[0]
    return buckets, srepr(value)


def _is_expression(value: Any) -> bool:
    from sympy import Expr
    from sympy.matrices.expressions import MatrixExpr

    return isinstance(value, Expr) and not isinstance(value, MatrixExpr)


def _expression_key(value: Any) -> tuple[tuple[Hashable, ...], Fraction | str]:
    from sympy import srepr

    if value.is_Rational and abs(int(value.p)) * int(value.q) < 2**_MAX_FRACTION_BITS:
        number = Fraction(int(value.p), int(value.q))
        return (number_bucket(number),), number
    return (("values", _values(value)),), srepr(value)


def _right_side(value: Any) -> Any:
    """The right side of an equation, or of the last in a chain (``x = 2 + 3 = 5``), else None."""
    from sympy import And, Eq

    while isinstance(value, And) and value.args and all(isinstance(arg, Eq) for arg in value.args):
        value = getattr(value, "_unsorted_args", value.args)[-1]  # latex2sympy keeps the written order
    return value.rhs if isinstance(value, Eq) else None


def _values(expr: Any) -> tuple[tuple[str, str], ...]:
    """The expression's values at ``POINTS`` points, each symbol's coordinate fixed by its
    name (so ``x/2`` and ``y/2`` differ), rounded; "?" where a value is not a finite number."""
    from sympy import Rational

    symbols = sorted(expr.free_symbols, key=str)
    values = []
    for point in range(POINTS):
        subs = {symbol: Rational(*_coordinate(str(symbol), point)) for symbol in symbols}
        try:
            real, imaginary = expr.evalf(_PRECISION, subs=subs).as_real_imag()
            values.append((_rounded_number(real), _rounded_number(imaginary)))
        except Exception:  # sympy cannot evaluate it there
            values.append(("?", "?"))
    return tuple(values)


def _coordinate(name: str, point: int) -> tuple[int, int]:
    """A non-integer rational between 1 and 4 (odd thousandths), fixed by the symbol name
    and the point: away from the usual removable singularities at 0, ±1, 2."""
    return 1001 + 2 * (zlib.crc32(f"{name}:{point}".encode()) % 1500), 1000


def _rounded_number(value: Any) -> str:
    from sympy import Float, Rational

    if not (value.is_Number and value.is_finite):
        return "?"
    if abs(value) < Rational(ZERO.numerator, ZERO.denominator):
        return "0"
    if abs(value) > _HUGE:  # never equal to an in-process number; exact rounding would be slow
        return f"~{Float(value, DIGITS)}"
    exact = Rational(value)
    return rounded(Fraction(int(exact.p), int(exact.q)))


_OPS: dict[str, Callable[..., object]] = {"key": _key, "verify": _verify}
