"""What a step is: where it ends, how deep a path may go, and the rules that find a step's
final answer. One place decides it for every strategy (its_hub's StepGeneration)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from treesearch.answers.extract import RUN_ON_MARKERS, extract_answer, split_run_on
from treesearch.errors import ConfigError


@dataclass(frozen=True, kw_only=True, slots=True)
class StepFormat:
    """What a step is: text up to ``delimiter`` (at most ``max_step_tokens``), a path at most
    ``max_depth`` steps deep; the step at the last allowed depth asks for the rest of the
    solution in one call. ``end_stops`` are further stop strings that end a solution (say
    "\\nQ:" after a few-shot prompt); text that runs on into a next question anyway is cut
    there. A whole solution in one call may use ``max_tokens``. ``answer_pattern`` is a
    regular expression that states the final answer (group ``answer``, else group 1), in
    place of the built-in ``\\boxed{}`` / "The answer is" rules."""

    delimiter: str = "\n\n"
    end_stops: tuple[str, ...] = ()
    max_step_tokens: int = 256
    max_depth: int = 40
    max_tokens: int = 1024
    answer_pattern: str | None = None

    def __post_init__(self) -> None:
        if not self.delimiter:
            raise ConfigError("the step delimiter must not be empty")
        if self.max_step_tokens <= 0 or self.max_depth <= 0 or self.max_tokens <= 0:
            raise ConfigError("max step tokens, max depth and max tokens must be positive")
        if self.answer_pattern is not None:
            try:
                re.compile(self.answer_pattern)
            except re.error as exc:
                raise ConfigError(f"answer pattern {self.answer_pattern!r}: {exc}") from None

    def answer(self, text: str) -> tuple[str, str | None, bool]:
        """A step's text cut before any run-on into a next question, its final answer (or
        None), and whether it ran on. A step starts on a new line (its delimiter ended the
        one before), so a next question at its very start is a run-on too."""
        cut, ran_on = split_run_on("\n" + text, (*RUN_ON_MARKERS, *self.end_stops))
        return cut[1:], extract_answer(cut[1:], self.answer_pattern), ran_on
