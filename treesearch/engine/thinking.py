"""A reasoning model's thinking, told apart from what follows it in raw text.

Servers with a reasoning parser (vLLM's ``--reasoning-parser``, DeepSeek's API) send the
thinking apart, in ``reasoning_content`` or ``reasoning``; raw completions (and chat servers
without a parser) carry it between tags, ``<think>`` and ``</think>`` by default. The rules,
the same for a whole text and a stream (which must decide as the text arrives):

- thinking runs from an open tag to the next close tag; several blocks join into one
  thinking, and the reply is the text outside them;
- a prompt that ends inside a thinking (an open tag after its last close tag, as DeepSeek-R1
  distills' templates leave it) makes the text start inside one;
- an open tag never closed (a text cut by ``max_tokens``) leaves the rest as thinking;
- a whole text with a close tag and no open tag before it (the server's template opened
  the thinking where the client cannot see it) is thinking up to that tag. A stream cannot
  know this before the tag arrives: its splitter leaves the text before it in the reply,
  and the streamed text is split again by the whole text's rule once it ended
  (``engine.proposals``).

Tags are removed; the thinking is stripped of the blank space around it (a blank one is
none), and the reply of the blank space before it, so ``"<think>\\nx\\n</think>\\n\\nThe
answer is 4."`` is the thinking ``"x"`` and the reply ``"The answer is 4."``. A text with no
tag at all is returned as it is, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from treesearch.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class ThinkTags:
    """The tags around a raw text's thinking."""

    open: str = "<think>"
    close: str = "</think>"

    def __post_init__(self) -> None:
        # one inside the other would be found where the other stands
        if not self.open or not self.close or self.open in self.close or self.close in self.open:
            raise ConfigError(
                f"think tags must be two non-empty strings, neither inside the other, got {self.open!r}, "
                f"{self.close!r}"
            )

    @classmethod
    def parse(cls, given: str) -> ThinkTags:
        """``OPEN,CLOSE`` as the command line gives them."""
        parts = given.split(",")
        if len(parts) != 2:
            raise ConfigError(f"--think-tags takes OPEN,CLOSE, got {given!r}")
        return cls(open=parts[0], close=parts[1])

    def opened_in(self, prompt: str, question: str = "") -> bool:
        """Whether ``prompt`` ends inside a thinking: its last open tag after its last close
        tag, both read after the ``question`` the prompt shows (its first occurrence), since a
        question may quote a tag. A template that opens the thinking does so after the
        question (DeepSeek-R1 distills' end with ``<think>`` and a newline), and steps continue it."""
        start = prompt.find(question) if question else -1
        tail = prompt[start + len(question) :] if start >= 0 else prompt
        return tail.rfind(self.open) > tail.rfind(self.close)

    def split(self, text: str, *, inside: bool = False) -> tuple[str | None, str]:
        """``text``'s thinking (None when there is none) and its reply; ``inside``: the prompt
        ended inside a thinking."""
        close = text.find(self.close)
        if not inside and close >= 0 and self.open not in text[:close]:
            inside = True  # the server's template opened it
        splitter = ThinkingSplitter(self, inside=inside)
        thinking, reply = splitter.feed(text)
        more_thinking, more_reply = splitter.flush()
        return joined(thinking + more_thinking, reply + more_reply)

    def closes(self, text: str) -> bool:
        """Whether ``text`` ends past the end of a thinking: its last close tag after its last
        open tag (what a reply left empty by a stop right after the close tag cannot say)."""
        return text.rfind(self.close) > text.rfind(self.open)


def joined(thinking: str, reply: str) -> tuple[str | None, str]:
    """A choice's thinking and reply from their parts: the thinking stripped (None when it
    is blank), and the reply without the blank space that followed the thinking."""
    thinking = thinking.strip()
    return (thinking, reply.lstrip()) if thinking else (None, reply)


class ThinkingSplitter:
    """Splits a stream's text into thinking and reply as it arrives. A piece that may be the
    start of a tag is held back until the next piece (or ``flush``) tells."""

    def __init__(self, tags: ThinkTags, *, inside: bool = False) -> None:
        self.tags = tags
        self.thinking = inside
        self._held = ""

    def feed(self, text: str) -> tuple[str, str]:
        """The thinking and the reply text that ``text`` (with what was held) settles."""
        text, self._held = self._held + text, ""
        thinking: list[str] = []
        reply: list[str] = []
        while text:
            tag = self.tags.close if self.thinking else self.tags.open
            found = text.find(tag)
            if found < 0:
                keep = _partial_tag(text, tag)
                text, self._held = text[: len(text) - keep], text[len(text) - keep :]
                (thinking if self.thinking else reply).append(text)
                break
            (thinking if self.thinking else reply).append(text[:found])
            self.thinking = not self.thinking
            text = text[found + len(tag) :]
        return "".join(thinking), "".join(reply)

    def flush(self) -> tuple[str, str]:
        """What was held back, at the end of the text."""
        held, self._held = self._held, ""
        return (held, "") if self.thinking else ("", held)


def _partial_tag(text: str, tag: str) -> int:
    """How many characters at the end of ``text`` could be the start of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
