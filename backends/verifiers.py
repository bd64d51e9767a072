"""Verifiers over OpenAI-compatible servers: a vLLM pooling PRM, a logprob yes/no judge, and
Chen et al.'s filter judge.

- ``PoolingPRM``: a process reward model served by vLLM (``vllm serve
  Qwen/Qwen2.5-Math-PRM-7B``), scored through ``POST /pooling``: each path is
  rendered with the step tag after every step, all paths of a call go in one
  request (``input`` as a list), and each step tag yields ``[p_bad, p_good]``
  (column ``good_column``).
- ``LogprobVerifier``: any completions endpoint with logprobs. A template puts
  the problem and the steps before a yes/no slot; the score is P(yes) among the
  top logprobs. It judges the newest step of each path (the context keeps the
  earlier steps' scores), and with ``FINISHED_TEMPLATE`` it is the model-judged
  completion check.
- ``JudgeVerifier``: Chen et al.'s filter-vote prompt; 1 for ``[[correct]]``,
  0 for ``[[wrong]]``, and ``ABSTAIN`` (0.5) when there is no verdict, e.g. one
  cut off by the token limit.

Requests per path are sent concurrently inside the endpoint's limit; every
call reports its usage so the context charges it to the budget. All three score
in [0, 1] (``probabilities``), so the context refuses anything else they return.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

from treesearch.engine.policy import completion_token_bound, token_upper_bound
from treesearch.engine.taskgroups import gather
from treesearch.engine.verify import Cost, Scored
from treesearch.errors import ConfigError, EndpointError
from treesearch.problems import Problem

from .endpoint import EndpointClient, JsonEndpoint, server_root

QWEN_PRM_TEMPLATE = (
    "<|im_start|>system\nPlease reason step by step, and put your final answer within"
    " \\boxed{{}}.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
    "<|im_start|>assistant\n{steps}<|im_end|><|endoftext|>"
)
STEP_TEMPLATE = (
    "Problem: {question}\n\nSolution:\n{steps}\n\n"
    "Question: Is the last step above correct? Answer Yes or No.\nAnswer:"
)
FINISHED_TEMPLATE = (
    "Problem: {question}\n\nSolution:\n{steps}\n\n"
    "Question: Has the solution above reached its final answer? Answer Yes or No.\nAnswer:"
)
FILTER_TEMPLATE = (
    "[User Question]: {question}\n[Answer]: {steps}\n"
    "Instruction: Review your previous answer and find problems with your answer. Finally,"
    " conclude with either '[[correct]]' if the above answer is correct or '[[wrong]]' if it"
    " is incorrect. Think step by step.\nVerdict:"
)


# A judge's score when it gave no verdict: filter-vote keeps such an answer (see aggregate.py).
ABSTAIN = 0.5


def _check_template(template: str) -> None:
    if "{question}" not in template or "{steps}" not in template:
        raise ConfigError("a verifier template needs {question} and {steps} fields")


class PoolingPRM(EndpointClient):
    probabilities = True

    def __init__(
        self,
        base_url: str | JsonEndpoint,
        model: str,
        *,
        step_tag: str = "<extra_0>",
        good_column: int = 1,
        template: str = QWEN_PRM_TEMPLATE,
        **endpoint_options: Any,
    ) -> None:
        """A ``base_url`` string may end in /v1: vLLM serves /pooling at the root. A shared
        endpoint must be the server's root."""
        _check_template(template)
        if isinstance(base_url, str):
            base_url = server_root(base_url)
        super().__init__(base_url, endpoint_options)
        self.model = model
        self.step_tag = step_tag
        self.good_column = good_column
        self.template = template

    def render(self, problem: Problem, steps: Sequence[str]) -> str:
        tagged = "".join(step + self.step_tag for step in steps)
        return self.template.format(question=problem.question, steps=tagged)

    def cost_bound(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Cost:
        prompt = sum(token_upper_bound(self.render(problem, steps)) + 4 for steps in paths)
        return Cost(prompt_tokens=prompt, requests=1)

    async def score(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Scored:
        inputs = [self.render(problem, steps) for steps in paths]
        raw = await self.http.post("/pooling", {"model": self.model, "input": inputs})
        try:
            items = sorted(raw["data"], key=lambda item: item["index"])
            scores = [self._column(item["data"]) for item in items]
        except (KeyError, TypeError, IndexError) as exc:
            raise EndpointError(self.http.base_url, 200, f"unexpected /pooling answer: {exc!r}") from exc
        usage = raw.get("usage") or {}
        prompt_tokens = usage.get("prompt_tokens")
        return Scored(
            scores=scores,
            cost=Cost(
                prompt_tokens=int(prompt_tokens)
                if prompt_tokens is not None
                else sum(token_upper_bound(text) + 4 for text in inputs),
                requests=1,
            ),
            estimated=prompt_tokens is None,
        )

    def _column(self, rows: Any) -> list[float]:
        """One score per step: the "good" column of [[p_bad, p_good], ...], or a flat list."""
        return [float(row[self.good_column]) if isinstance(row, list) else float(row) for row in rows]


class _PerPathJudge(EndpointClient):
    """One completions request per path, concurrently; subclasses read a score from each."""

    template: str
    max_tokens: int
    logprobs: int | None = None
    probabilities = True

    def __init__(
        self, base_url: str | JsonEndpoint, model: str, joiner: str, endpoint_options: dict[str, Any]
    ) -> None:
        _check_template(self.template)
        super().__init__(base_url, endpoint_options)
        self.model = model
        self.joiner = joiner

    def render(self, problem: Problem, steps: Sequence[str]) -> str:
        return self.template.format(question=problem.question, steps=self.joiner.join(steps))

    def cost_bound(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Cost:
        prompt = sum(token_upper_bound(self.render(problem, steps)) + 4 for steps in paths)
        return Cost(
            prompt_tokens=prompt,
            completion_tokens=self.max_tokens * len(paths),
            requests=len(paths),
        )

    async def score(self, problem: Problem, paths: Sequence[Sequence[str]]) -> Scored:
        prompts = [self.render(problem, steps) for steps in paths]
        bodies = [
            {"model": self.model, "prompt": prompt, "max_tokens": self.max_tokens, "temperature": 0.0}
            | ({} if self.logprobs is None else {"logprobs": self.logprobs})
            for prompt in prompts
        ]
        answers = await gather([partial(self.http.post, "/completions", body) for body in bodies])
        prompt_tokens = completion_tokens = 0
        estimated = False
        scores = []
        for prompt, answer in zip(prompts, answers, strict=True):
            try:
                choice = answer["choices"][0]
                scores.append([self.read(choice)])
            except (KeyError, TypeError, IndexError) as exc:
                raise EndpointError(self.http.base_url, 200, f"unexpected answer: {exc!r}") from exc
            usage = answer.get("usage") or {}
            if "prompt_tokens" in usage:
                prompt_tokens += int(usage["prompt_tokens"])
                completion_tokens += int(usage.get("completion_tokens", 0))
            else:
                estimated = True
                prompt_tokens += token_upper_bound(prompt) + 4
                completion_tokens += completion_token_bound(str(choice.get("text") or ""), self.max_tokens)
        cost = Cost(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, requests=len(paths))
        return Scored(scores=scores, cost=cost, estimated=estimated)

    def read(self, choice: dict[str, Any]) -> float:
        raise NotImplementedError


class LogprobVerifier(_PerPathJudge):
    max_tokens = 1

    def __init__(
        self,
        base_url: str | JsonEndpoint,
        model: str,
        *,
        template: str = STEP_TEMPLATE,
        yes: Sequence[str] = ("yes", "+"),
        no: Sequence[str] = ("no", "-"),
        top_logprobs: int = 5,
        joiner: str = "\n\n",
        **endpoint_options: Any,
    ) -> None:
        """``joiner`` goes between steps in the template's {steps}."""
        self.template = template
        self.logprobs = top_logprobs
        self.yes, self.no = {t.lower() for t in yes}, {t.lower() for t in no}
        super().__init__(base_url, model, joiner, endpoint_options)

    def read(self, choice: dict[str, Any]) -> float:
        """P(yes) / (P(yes) + P(no)) among the first token's top logprobs; 0.5 when neither shows."""
        top = (choice.get("logprobs") or {}).get("top_logprobs") or [{}]
        yes = no = 0.0
        for token, logprob in (top[0] or {}).items():
            word = token.strip().lower()
            if word in self.yes:
                yes += math.exp(logprob)
            elif word in self.no:
                no += math.exp(logprob)
        return yes / (yes + no) if yes + no > 0 else 0.5


class JudgeVerifier(_PerPathJudge):
    def __init__(
        self,
        base_url: str | JsonEndpoint,
        model: str,
        *,
        template: str = FILTER_TEMPLATE,
        max_tokens: int = 256,
        joiner: str = "\n\n",
        **endpoint_options: Any,
    ) -> None:
        self.template = template
        self.max_tokens = max_tokens
        super().__init__(base_url, model, joiner, endpoint_options)

    def read(self, choice: dict[str, Any]) -> float:
        """1 when the last verdict says correct, 0 when it says wrong, ABSTAIN when there is
        none (a judgement cut off by the token limit before its verdict says nothing)."""
        text = str(choice.get("text") or "")
        correct, wrong = text.rfind("[[correct]]"), text.rfind("[[wrong]]")
        if correct == wrong:  # neither: cut off by the token limit, or never concluded
            return ABSTAIN
        return 1.0 if correct > wrong else 0.0
