"""redact: a key is blanked out in every form a server may quote it, and nothing else is touched."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from treesearch.redaction import redact

KEY = "sk-proj/AB+cd/SECRET-7f3a9c-0d1e2f"  # 34 characters: prefixes of 17 or more are hidden

ASCII_KEYS = st.text(st.sampled_from("/+=- ") | st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                     min_size=8, max_size=80)  # fmt: skip
UNICODE_KEYS = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF).filter(str.isprintable) | st.sampled_from("€😀"),
    min_size=8,
    max_size=80,
).filter(lambda key: not key.isascii())
# The text around a key: letters no key above is made of, so a match cannot start or end in it.
AROUND = st.text(st.characters(min_codepoint=0x3041, max_codepoint=0x3096), max_size=12)
# What may follow a key cut short: an ellipsis, a closing quote, a space, the end of the text.
CUTS = st.sampled_from(["...", "…", '"', "'", " ", "\n", ""])


def unicode_escaped(text: str, upper: bool) -> str:
    units = text.encode("utf-16-be", "surrogatepass")
    escaped = "".join("\\u" + units[i : i + 2].hex() for i in range(0, len(units), 2))
    return escaped.upper().replace("\\U", "\\u") if upper else escaped


def percent_encoded(c: str, upper: bool) -> str:
    encoded = "".join(f"%{byte:02x}" for byte in c.encode())
    return encoded.upper() if upper else encoded


ENCODINGS: dict[str, Callable[[str], str]] = {
    "plain": lambda key: key,
    "json": lambda key: json.dumps(key, ensure_ascii=False)[1:-1],
    "json with \\/": lambda key: json.dumps(key, ensure_ascii=False)[1:-1].replace("/", "\\/"),
    "json ascii": lambda key: json.dumps(key)[1:-1],
    "\\u lower": lambda key: unicode_escaped(key, upper=False),
    "\\u upper": lambda key: unicode_escaped(key, upper=True),
    "quote": urllib.parse.quote,
    "quote all": lambda key: urllib.parse.quote(key, safe=""),
    "quote_plus": urllib.parse.quote_plus,
    "repr": lambda key: repr(key)[1:-1],
}


@st.composite
def mixed(draw: st.DrawFn, key: str) -> str:
    """Each character in a form of its own: plain, JSON-escaped, \\u-escaped or percent-encoded."""
    shown = []
    for c in key:
        forms = [c, unicode_escaped(c, draw(st.booleans())), percent_encoded(c, draw(st.booleans()))]
        if c in '/"\\':
            forms.append("\\" + c)
        if c == " ":
            forms.append("+")
        shown.append(draw(st.sampled_from(forms)))
    return "".join(shown)


def shortest(key: str) -> int:
    """The shortest prefix of ``key`` that is hidden: 8 characters, or half the key if longer."""
    return min(len(key), max(8, -(-len(key) // 2)))


@st.composite
def quoted(draw: st.DrawFn, whole: bool) -> tuple[str, str, str]:
    """(key, how a server quoted it or, unless ``whole``, a prefix of it, what follows)."""
    key = draw(ASCII_KEYS | UNICODE_KEYS)
    end = len(key) if whole else draw(st.integers(shortest(key), len(key)))
    cut = draw(CUTS) if end < len(key) or draw(st.booleans()) else ""
    assume(end == len(key) or not cut.startswith(key[end]))  # a cut is not followed by the key
    encoding = draw(st.sampled_from([*ENCODINGS, "mixed"]))
    shown = draw(mixed(key[:end])) if encoding == "mixed" else ENCODINGS[encoding](key[:end])
    return key, shown, cut


@settings(deadline=None)  # each new key compiles a pattern
@given(quoted(whole=False), AROUND, AROUND)
def test_every_form_of_a_key_or_its_prefix_is_blanked_out(
    case: tuple[str, str, str], before: str, after: str
) -> None:
    key, shown, cut = case
    assert redact(f"{before}{shown}{cut}{after}", [key]) == f"{before}***{cut}{after}"


@settings(deadline=None)  # each new key compiles a pattern
@given(quoted(whole=True), st.integers(1, 3), AROUND)
def test_each_occurrence_is_blanked_out(case: tuple[str, str, str], times: int, between: str) -> None:
    key, shown, _ = case
    assert redact((between + shown) * times + between, [key]) == (between + "***") * times + between


@settings(deadline=None)  # each new key compiles a pattern
@given(ASCII_KEYS | UNICODE_KEYS, CUTS, AROUND)
def test_a_prefix_shorter_than_the_shortest_hidden_is_left(key: str, cut: str, after: str) -> None:
    end = shortest(key) - 1
    assume(not cut.startswith(key[end]))
    text = f"{key[:end]}{cut}{after}"
    assert redact(text, [key]) == text


@settings(deadline=None)  # each new key compiles a pattern
@given(ASCII_KEYS | UNICODE_KEYS, st.text())
def test_a_text_without_the_key_is_unchanged(key: str, text: str) -> None:
    assume(key[: shortest(key)] not in text)
    assert redact(text, [key]) == text


@pytest.mark.parametrize(
    "shown",
    [
        "sk-proj\\/AB+cd\\/SECRET-7f3a9c-0d1e2f",
        "\\u0073\\u006B-proj/AB\\u002bcd\\/SECRET-7f3a9c-0d1e2f",
        "sk-proj%2FAB%2Bcd%2fSECRET-7f3a9c-0d1e2f",
        "sk-proj%252FAB%252Bcd%252FSECRET-7f3a9c-0d1e2f",  # encoded twice
        "sk-proj\\\\\\/AB+cd\\\\\\/SECRET-7f3a9c-0d1e2f",  # JSON-escaped twice
    ],
)
def test_a_server_body_quoting_the_key(shown: str) -> None:
    body = '{"error": {"message": "Incorrect API key provided: ' + shown + '."}}'
    assert redact(body, [KEY]) == '{"error": {"message": "Incorrect API key provided: ***."}}'


@pytest.mark.parametrize(
    ("quoted", "shown"),
    [
        ("sk-proj/AB+cd/SEC...", "***..."),
        ("sk-proj/AB+cd/SEC…", "***…"),
        ('"sk-proj/AB+cd/SECRET-7f"', '"***"'),
        ("sk-proj/AB+cd/SECRET-7f3a9c", "***"),
        ("sk-proj/AB+cd/SECRET!", "***!"),  # cut where the key does not go on, at any character
    ],
)
def test_a_key_cut_short(quoted: str, shown: str) -> None:
    assert redact(f"invalid key {quoted}", [KEY]) == f"invalid key {shown}"


def test_a_cut_too_short_to_give_the_key_away_is_kept() -> None:
    assert redact("invalid key sk-proj/AB+cd/SE...", [KEY]) == "invalid key sk-proj/AB+cd/SE..."


def test_an_escaped_backslash_before_the_key_is_kept() -> None:
    key = "/" + KEY  # starts with a character JSON may escape
    body = json.dumps({"message": "C:\\keys\\" + key}).replace("/", "\\/")
    assert body.startswith('{"message": "C:\\\\keys\\\\\\/sk-proj\\/')
    assert redact(body, [key]) == '{"message": "C:\\\\keys\\\\***"}'


def test_several_keys_and_the_placeholders() -> None:
    other = "sk-prm-0123456789abcdef"
    text = f"policy {KEY}, verifier {urllib.parse.quote(other)}, none EMPTY"
    assert redact(text, [other, KEY, "", "EMPTY"]) == "policy ***, verifier ***, none EMPTY"
    assert redact(text, []) == text
    assert redact(text, ["EMPTY", ""]) == text


def test_a_key_of_thousands_of_characters() -> None:
    """A token-like key far longer than an API key: its pattern still compiles, and a cut
    quote of it is hidden."""
    key = "eyJ" + "AbCd/+9z" * 100
    assert redact(f"bearer {key[:600]}... refused", [key]) == "bearer ***... refused"


def test_a_large_body() -> None:
    filler = "lorem ipsum dolor sit amet " * 4000  # about 100 kB
    assert redact(f"{filler}{json.dumps(KEY)}{filler}", [KEY]) == f'{filler}"***"{filler}'
