"""Blanking API keys out of text a server sent back, in whatever form it quoted them.

A server that refuses or fails a request often quotes what it got, and so the key: JSON-escaped
(``sk-proj\\/AB`` as PHP writes a slash, or ``\\u0073`` for any character), URL-encoded
(``%2F``, ``+`` for a space), inside a Python repr, or cut short (``sk-proj/AB+cd/SEC...``,
by the server or by whoever shortened the message). Replacing the key's exact text lets each
of those through to stderr, rows, log events and a proxy's error responses, so ``redact``
matches every character in any of those forms, mixed freely within one occurrence, and any
prefix long enough to matter (at least 8 characters and half the key) as far as the key goes
on. One regex per key, compiled once: it runs on every error message, some of them large.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

__all__ = ["redact"]

_PLACEHOLDER = "EMPTY"  # what an endpoint without a key sends; nothing to hide
_MIN_PREFIX = 8


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each occurrence of each secret, in any form above, replaced by ``***``.
    Empty secrets and the placeholder "EMPTY" are ignored; text quoting none is returned as is."""
    for secret in sorted({s for s in secrets if s and s != _PLACEHOLDER}, key=len, reverse=True):
        text = _pattern(secret).sub("***", text)
    return text


@functools.lru_cache(maxsize=64)
def _pattern(secret: str) -> re.Pattern[str]:
    """The first ``shortest`` characters of the secret, then as many more as the text goes on
    with. Each further character is a group tried only when the one before it matched
    (``(?(n)...)``), a flat pattern however long the key: nested optional groups would
    overflow the regex compiler's recursion on a key of a few hundred characters."""
    shortest = min(len(secret), max(_MIN_PREFIX, -(-len(secret) // 2)))
    chars = [_char(c, first=i == 0) for i, c in enumerate(secret)]
    # Where the match may end, a form after which the key goes on is preferred: a key holding
    # "%41" quoted as it is must not read its "%" as an escape and stop there, letting the
    # rest through. Not before: there backtracking finds the form that fits, and a choice
    # offered twice would double the cost of every near miss at each character.
    for i in range(shortest - 1, len(chars) - 1):
        chars[i] = f"(?:{chars[i]}(?={chars[i + 1]})|{chars[i]})"
    parts = chars[:shortest]
    for group, c in enumerate(chars[shortest:], start=1):
        parts.append(f"({c})?" if group == 1 else f"(?({group - 1})({c})?)")
    return re.compile("".join(parts))


def _char(c: str, *, first: bool) -> str:
    """One character in any form: itself; after backslashes (JSON's ``\\/``, ``\\"`` and
    ``\\\\``, a repr's ``\\'``, or JSON quoted inside JSON); a ``\\uXXXX`` escape (a surrogate
    pair beyond the BMP); percent-encoded UTF-8 (``%252F`` when encoded twice); ``+`` for a
    space. Hex digits in either case. The first character allows only one backslash, so a
    match never swallows an escaped backslash of the text before the key. The character
    itself is tried last: alternatives are tried in order, and a key ending in ``\\`` quoted
    as ``\\\\`` must take both backslashes."""
    slashes = r"\\" if first else r"\\+"
    units = c.encode("utf-16-be", "surrogatepass")
    escaped = "".join(slashes + "u" + units[i : i + 2].hex() for i in range(0, len(units), 2))
    percent = "".join(f"%(?:25)*{byte:02x}" for byte in c.encode("utf-8", "surrogatepass"))
    forms = [f"(?i:{escaped})", f"(?i:{percent})"]
    if not c.isalnum():
        forms.append(slashes + re.escape(c))
    if c == " ":
        forms.append(r"\+")
    return "(?:" + "|".join([*forms, re.escape(c)]) + ")"
