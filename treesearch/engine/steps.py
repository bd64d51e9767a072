"""What a step is: where it ends, how deep a path may go, and the rules that find a step's
final answer. One place decides it for every strategy (its_hub's StepGeneration)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from treesearch.answers.extract import RUN_ON_MARKERS, extract_answer, split_run_on
from treesearch.engine.options import COUNTS, check, checks, option
from treesearch.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class StepFormat:
    """What a step is: text up to ``delimiter`` (at most ``max_step_tokens``), a path at most
    ``max_depth`` steps deep; the step at the last allowed depth asks for the rest of the
    solution in one call. ``end_stops`` are further stop strings that end a solution (say
    "\\nQ:" after a few-shot prompt); text that runs on into a next question anyway is cut
    there. A whole solution in one call may use ``max_tokens``. ``answer_pattern`` is a
    regular expression that states the final answer (group ``answer``, else group 1), in
    place of the built-in ``\\boxed{}`` / "The answer is" rules. A whole solution's thinking
    may be held between ``min_thinking`` and ``thinking_budget`` tokens (``budget_forcing``:
    the wait word, the answer cue and the answer's tokens are its settings); inside a long
    thinking a step may also end before a marker word (``thinking_markers``) or after
    ``thinking_step_tokens``, a cut that leaves its path open. Each field is a search option
    of the command line, shown by ``--help`` in the order of the fields."""

    max_step_tokens: int = option(256, "tokens of one step", group="search", range=COUNTS)
    max_tokens: int = option(
        1024, "tokens of a whole solution sampled in one request", group="search", range=COUNTS
    )
    delimiter: str = option(
        "\n\n",
        "the text that ends a step, backslash escapes allowed (default: '\\n\\n')",
        flag="--step-delimiter",
        group="search",
    )
    end_stops: tuple[str, ...] = option(
        (),
        "a further stop string that ends a solution, repeatable (default: none)",
        flag="--stop",
        group="search",
    )
    max_depth: int = option(
        40, "steps of a path; the last asks for the rest of the solution", group="search", range=COUNTS
    )
    answer_pattern: str | None = option(
        None,
        "how a solution states its final answer (group 'answer', else group 1) (default: "
        "\\boxed{} and 'The answer is X.')",
        group="search",
        parse=str,
        metavar="REGEX",
    )
    thinking_budget: int | None = option(
        None,
        "T: a whole solution's thinking stops at T tokens, then the end-of-thinking tag and "
        "--answer-cue, and the answer in one short request (s1's budget forcing; completions "
        "only) (default: no cap)",
        group="search",
        range=COUNTS,
    )
    min_thinking: int | None = option(
        None,
        "T0: a whole solution's thinking that ends before T0 tokens goes on after --wait-word "
        "(s1; completions only) (default: none)",
        group="search",
        range=COUNTS,
    )
    max_waits: int = option(1, "k: how often --min-thinking may go on after --wait-word", group="search",
                            range=COUNTS)  # fmt: skip
    wait_word: str = option("Wait", "what a thinking ended too early goes on after", group="search")
    answer_cue: str = option(
        "Final Answer:", "what follows the end-of-thinking tag a thinking budget adds", group="search"
    )
    answer_tokens: int = option(
        64, "tokens of the answer asked for after a thinking budget", group="search", range=COUNTS
    )
    thinking_markers: tuple[str, ...] = option(
        (),
        "a word that starts a new step where it follows a space or a line break, such as Wait "
        "or Alternatively, repeatable (default: none)",
        flag="--step-marker",
        group="search",
    )
    thinking_step_tokens: int | None = option(
        None,
        "tokens of one step: a step cut there inside a thinking goes on in the next (default: "
        "--max-step-tokens, which ends its path)",
        group="search",
        range=COUNTS,
    )

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ConfigError("the step delimiter must not be empty")
        check(self, _CHECKS)
        if not self.wait_word.strip() or not all(marker.strip() for marker in self.thinking_markers):
            raise ConfigError("the wait word and step markers must not be blank")
        low, high = self.min_thinking, self.thinking_budget
        if low is not None and high is not None and low > high:
            raise ConfigError(f"min thinking must not exceed the thinking budget, got {low} > {high}")
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise ConfigError(f"answer pattern {self.answer_pattern!r}: {exc}") from None

    @property
    def step_stops(self) -> tuple[str, ...]:
        """The stop strings of one step: its delimiter, each marker after a space or a line
        break (the marker starts the next step), and the solution's end stops."""
        markers = tuple(f"{space}{marker}" for marker in self.thinking_markers for space in ("\n", " "))
        return (self.delimiter, *markers, *self.end_stops)

    @property
    def step_tokens(self) -> int:
        """The most tokens of one step."""
        return self.max_step_tokens if self.thinking_step_tokens is None else self.thinking_step_tokens

    def answer(self, text: str) -> tuple[str, str | None, bool]:
        """A step's text cut before any run-on into a next question, its final answer (or
        None), and whether it ran on. A step starts on a new line (its delimiter ended the
        one before), so a next question at its very start is a run-on too."""
        cut, ran_on = split_run_on("\n" + text, (*RUN_ON_MARKERS, *self.end_stops))
        return cut[1:], extract_answer(cut[1:], self.answer_pattern), ran_on


_CHECKS = checks(StepFormat)
