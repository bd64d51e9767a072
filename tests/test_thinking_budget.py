"""Thinking budgets (s1's budget forcing) and steps inside a thinking: the thinking request
cut at exactly T tokens and the answer asked for after the end tag and the cue, "Wait"
appended at most k times and only when the thinking ended before T0, budgets never overrun
(a trace the budget stops keeps what was served, never an answer from its thinking), chat
refused in one line; a judge that thought and replied keeps its judgement; traces whose
answer request failed or stalled past the deadline stay in the tree; steps split at marker
words and at a length cap, their thinking sent back in its tags, and past the end of the
thinking (beam with a PRM too); a streamed trace whose template opened the thinking
answers from its reply; DeepConf's window of 2,048 tokens for traces that think. Requests go
to the synthetic server, whose thinking trace is a wrong boxed first guess and then checks
that settle on an answer (``backends/fake/thinking.py``), or, for replies it never gives, to
a scripted one (``scripted_server``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio
import pytest
from aiohttp import web
from conftest import PROBLEMS, run_cli, server_stats, write_problems
from scripted_server import completion, scripted_server
from structlog.testing import capture_logs

from treesearch import BudgetLimits, Prefix, SamplingParams, SearchConfig, search
from treesearch.backends.fake.tasks import count_tokens
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.engine.steps import StepFormat
from treesearch.engine.tree import ROOT, Node, SearchTree
from treesearch.errors import ConfigError
from treesearch.strategies.deepconf import THINKING_WINDOW, window_for

pytestmark = pytest.mark.anyio

THINK = ("--think", "120")  # traces of about 120 thinking tokens
CLAIM = re.compile(r"(?:\\boxed\{|it looks like )([^\s{}]+?)\}?\.")


class Recording(OpenAIPolicy):
    """A real policy over the synthetic server that keeps every request body it sends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bodies: list[dict[str, Any]] = []

    def _body(self, prefix: Prefix, n: int, params: SamplingParams) -> dict[str, Any]:
        body = super()._body(prefix, n, params)
        self.bodies.append(body)
        return body


@pytest.fixture
async def recording(fake_server: Callable[..., str]) -> Any:
    made: list[Recording] = []

    def make(*flags: str, **options: Any) -> Recording:
        made.append(Recording(fake_server(*flags), "fake", **options))
        return made[-1]

    yield make
    for policy in made:
        await policy.aclose()


def config(strategy: str = "majority-vote", *, n: int = 4, budget: BudgetLimits | None = None,
           **step: Any) -> SearchConfig:  # fmt: skip
    return SearchConfig(strategy=strategy, n=n, whole=True, sampling=SamplingParams(seed=7),
                        step=StepFormat(**step), budget=budget or BudgetLimits())  # fmt: skip


def traces(tree: SearchTree | None) -> list[Node]:
    assert tree is not None
    return [node for node in tree.nodes() if node.id != ROOT]


@pytest.mark.parametrize("budget", [12, 45, 80])
async def test_the_thinking_stops_at_exactly_t_tokens_and_the_answer_is_asked_for(
    budget: int, recording: Callable[..., Recording]
) -> None:
    policy = recording(*THINK)
    result = await search(PROBLEMS["a5"], policy, config(n=1, thinking_budget=budget, answer_tokens=16))
    thinking, answer = policy.bodies
    assert thinking["max_tokens"] == budget
    assert answer["max_tokens"] == 16
    (node,) = traces(result.tree)
    assert node.requests == 2 and node.thinking is not None
    assert answer["prompt"] == f"{thinking['prompt']}<think>\n{node.thinking}\n</think>\n\nFinal Answer:"
    # the thinking request was all thinking, cut at T tokens (3 of them the open tag's)
    reply = node.text.removeprefix("Final Answer: ")
    assert node.tokens == budget + count_tokens(reply) == result.usage.completion_tokens
    assert node.reasoning_tokens == count_tokens(node.thinking) == budget - 3
    # the synthetic model answers a cut thinking with its last claim
    assert node.answer == CLAIM.findall(node.thinking)[-1]


async def test_each_of_n_traces_asks_for_its_own_answer(recording: Callable[..., Recording]) -> None:
    policy = recording(*THINK)
    result = await search(PROBLEMS["a5"], policy, config(n=4, thinking_budget=30))
    thinking, *answers = policy.bodies
    assert (thinking["n"], thinking["max_tokens"]) == (4, 30)
    assert len(answers) == 4 and all((body["n"], body["max_tokens"]) == (1, 64) for body in answers)
    nodes = traces(result.tree)
    assert len(nodes) == 4 and all(node.requests == 2 and node.answer is not None for node in nodes)
    assert {f"<think>\n{node.thinking}\n</think>" for node in nodes} == {
        body["prompt"].split("Solution:\n")[1].removesuffix("\n\nFinal Answer:") for body in answers
    }
    assert result.usage.requests == 5


async def test_a_thinking_that_ends_within_t_is_answered_in_its_own_request(
    recording: Callable[..., Recording],
) -> None:
    policy = recording(*THINK)
    result = await search(PROBLEMS["a5"], policy, config(thinking_budget=1000))
    assert [body["max_tokens"] for body in policy.bodies] == [1000]
    assert all(node.requests == 1 and node.text.startswith("The answer is") for node in traces(result.tree))


@pytest.mark.parametrize("waits", [1, 3])
async def test_wait_is_appended_at_most_k_times_when_the_thinking_ends_before_t0(
    waits: int, recording: Callable[..., Recording]
) -> None:
    policy = recording(*THINK)
    result = await search(PROBLEMS["a5"], policy, config(n=2, min_thinking=10_000, max_waits=waits))
    nudged = [body["prompt"] for body in policy.bodies[1:]]
    assert len(nudged) == 2 * waits
    for prompt in nudged:
        assert prompt.endswith("\n\nWait") and "</think>" not in prompt.split("Solution:")[-1]
    assert max(prompt.count("\n\nWait") for prompt in nudged) == waits
    for node in traces(result.tree):
        assert node.requests == 1 + waits
        assert node.thinking is not None and node.thinking.count("Wait, let me check again") == waits
        assert node.text.startswith("The answer is")


async def test_no_wait_once_the_thinking_reached_t0(recording: Callable[..., Recording]) -> None:
    policy = recording(*THINK)
    result = await search(PROBLEMS["a5"], policy, config(min_thinking=50, max_waits=3))
    assert len(policy.bodies) == 1
    assert all(node.requests == 1 and "Wait" not in (node.thinking or "") for node in traces(result.tree))


async def test_wait_turns_wrong_answers_right_where_the_model_rethinks(
    recording: Callable[..., Recording],
) -> None:
    """The synthetic model fixes a wrong answer after "Wait" with probability --wait-fix."""
    plain = await search(PROBLEMS["b3"], recording(*THINK, "--wait-fix", "1"), config(n=8))
    waited = await search(
        PROBLEMS["b3"], recording(*THINK, "--wait-fix", "1"), config(n=8, min_thinking=5000)
    )
    gold = PROBLEMS["b3"].answer
    assert any(node.answer != gold for node in traces(plain.tree))
    assert all(node.answer == gold for node in traces(waited.tree))


@pytest.mark.parametrize("limit", [60, 150, 300, 700])
@pytest.mark.parametrize("step", [{"thinking_budget": 40}, {"thinking_budget": 300, "min_thinking": 200}])
async def test_budgets_never_overrun(
    limit: int, step: dict[str, Any], recording: Callable[..., Recording]
) -> None:
    policy = recording(*THINK)
    before = server_stats(policy.endpoint)
    result = await search(PROBLEMS["b5"], policy, config(budget=BudgetLimits(tokens=limit), **step))
    after = server_stats(policy.endpoint)
    assert result.error is None
    assert result.usage.total_tokens <= limit
    assert result.usage.completion_tokens == after["completion_tokens"] - before["completion_tokens"]
    assert sum(node.tokens for node in traces(result.tree)) == result.usage.completion_tokens


async def test_a_budget_spent_before_the_answer_request_leaves_no_answer_from_the_thinking(
    recording: Callable[..., Recording],
) -> None:
    """Room for the thinking request and two answer requests of four: two traces answer,
    the other two end with their thinking, whose boxed first guess is never their answer."""
    policy = recording(*THINK)
    result = await search(PROBLEMS["a5"], policy, config(thinking_budget=30, budget=BudgetLimits(requests=3)))
    nodes = traces(result.tree)
    assert result.usage.requests == 3 and len(nodes) == 4
    answered = [node for node in nodes if node.answer is not None]
    assert len(answered) == 2 and all(node.requests == 2 for node in answered)
    for node in nodes:
        assert node.thinking is not None and "\\boxed{" in node.thinking
        if node.answer is None:
            assert node.requests == 1 and node.text == "" and node.finish_reason == "length"
    assert result.answer in {node.answer for node in answered}


async def test_chat_is_refused_in_one_error(recording: Callable[..., Recording]) -> None:
    policy = recording(*THINK, api="chat")
    result = await search(PROBLEMS["a5"], policy, config(thinking_budget=40))
    assert (
        result.stopped_by == "error" and result.error is not None and "need --api completions" in result.error
    )
    assert policy.bodies == []


def test_chat_is_refused_in_one_line_from_the_command_line(
    fake_server: Callable[..., str], tmp_path: Any
) -> None:
    problems = write_problems(tmp_path / "p.jsonl", [PROBLEMS["a5"]])
    done = run_cli("run", "--base-url", fake_server(*THINK), "--model", "fake", "--api", "chat",
                   "--problems", str(problems), "--out", str(tmp_path / "out.jsonl"),
                   "--thinking-budget", "40")  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--api completions" in lines[0], done.stderr


@pytest.mark.parametrize("strategy", ["deepconf", "self-certainty"])
async def test_streamed_and_scored_traces_are_held_too(
    strategy: str, recording: Callable[..., Recording]
) -> None:
    """Online DeepConf streams its traces; each one's answer comes after the cut."""
    policy = recording(*THINK)
    options: dict[str, Any] = {"deepconf_warmup": 2} if strategy == "deepconf" else {}
    result = await search(
        PROBLEMS["c3"], policy, replace(config(strategy, n=5, thinking_budget=30), **options)
    )
    nodes = traces(result.tree)
    assert nodes and all(node.requests == 2 and node.reasoning_tokens == 27 for node in nodes)
    thinking_requests = [body for body in policy.bodies if not body["prompt"].endswith("Final Answer:")]
    assert {body["max_tokens"] for body in thinking_requests} == {30}
    assert all(node.confidences is not None and len(node.confidences) == node.tokens for node in nodes)


def test_steps_end_before_markers_and_the_delimiter() -> None:
    step = StepFormat(thinking_markers=("Wait", "Alternatively"), end_stops=("Q:",))
    assert step.step_stops == ("\n\n", "\nWait", " Wait", "\nAlternatively", " Alternatively", "Q:")
    assert StepFormat(thinking_step_tokens=32).step_tokens == 32 and StepFormat().step_tokens == 256
    with pytest.raises(ConfigError, match="must not exceed"):
        StepFormat(thinking_budget=10, min_thinking=20)
    with pytest.raises(ConfigError, match="blank"):
        StepFormat(thinking_markers=(" ",))


def step_config(**step: Any) -> SearchConfig:
    return SearchConfig(strategy="majority-vote", n=2, whole=False, sampling=SamplingParams(seed=5),
                        step=StepFormat(**step))  # fmt: skip


async def test_a_step_ends_at_each_marker_inside_the_thinking(recording: Callable[..., Recording]) -> None:
    """With no blank-line delimiter in the trace, the marker "Let" alone splits its
    paragraphs ("Let me check step k: ..."): each step is one paragraph."""
    policy = recording("--think", "40")
    result = await search(
        PROBLEMS["a5"], policy, step_config(delimiter="\n\n\n\n", thinking_markers=("Let",))
    )
    nodes = traces(result.tree)
    thought = [node for node in nodes if node.thinking is not None]
    assert len(thought) > 4
    for node in thought:
        assert node.thinking is not None and "Let" not in node.thinking[1:]
        assert re.fullmatch(
            r"(First guess: \\boxed\{\S+\}|Let me check step \d+: it looks like \S+)\.", node.thinking
        )
    assert {node.answer for node in nodes if node.answer} and all(
        node.text.startswith("The answer is") for node in nodes if node.answer
    )
    # a later step's prompt carries the earlier steps' thinking, in its tags
    first = min(thought, key=lambda node: node.depth)
    assert any(
        f"Solution:\n<think>\n{first.thinking}\n\n\n\n" in body["prompt"] for body in policy.bodies[2:]
    )


async def test_a_step_cut_by_the_cap_inside_the_thinking_goes_on(recording: Callable[..., Recording]) -> None:
    policy = recording("--think", "40")
    result = await search(PROBLEMS["a5"], policy, step_config(thinking_step_tokens=6, max_depth=5))
    assert result.tree is not None
    cut = [node for node in traces(result.tree) if node.finish_reason == "length" and not node.text]
    assert cut and all(node.tokens <= 6 for node in cut)
    assert all(result.tree.children(node.id) for node in cut if node.depth < 5)  # open: extended
    assert {body["max_tokens"] for body in policy.bodies} == {6, 1024}  # a step; the rest at the last depth
    assert any(node.answer is not None for node in traces(result.tree))


async def test_without_the_cap_a_step_cut_by_length_ends_its_path(
    recording: Callable[..., Recording],
) -> None:
    policy = recording("--think", "40")
    result = await search(PROBLEMS["a5"], policy, step_config(max_step_tokens=6, max_depth=5))
    assert result.tree is not None
    assert all(node.depth == 1 and node.terminal for node in traces(result.tree))


async def test_a_step_that_closes_the_thinking_is_continued_past_it(
    recording: Callable[..., Recording],
) -> None:
    """R1's layout, "...\\n</think>\\n\\nThe answer is X.": the step that closes the thinking
    stops at the blank line after the close tag, with no text yet; its end is kept and sent
    back, so the next step is the reply and every path reaches an answer."""
    policy = recording("--think", "40")
    result = await search(PROBLEMS["a5"], policy, step_config(thinking_step_tokens=30))
    assert result.tree is not None
    nodes = traces(result.tree)
    closing = [node for node in nodes if node.thinking_closed]
    assert closing and all(node.text == "" and node.thinking for node in closing)
    for node in closing:
        (reply,) = result.tree.children(node.id)
        assert reply.thinking is None and reply.answer is not None
    assert all(node.answer is not None for node in nodes if node.terminal)
    assert any(body["prompt"].endswith(f"{closing[0].thinking}\n</think>\n\n") for body in policy.bodies)
    assert result.answer is not None


async def test_beam_with_a_prm_searches_inside_the_thinking(
    recording: Callable[..., Recording], prm: PoolingPRM
) -> None:
    """The PRM judges a step within the thinking by its thinking (it has no reply yet)."""
    policy = recording("--think", "40")
    beam = replace(step_config(thinking_step_tokens=30), strategy="beam", n=4, beam_width=2)
    result = await search(PROBLEMS["a5"], policy, beam, verifier=prm)
    assert result.error is None and result.answer is not None
    assert any(node.scores and node.thinking and not node.text for node in traces(result.tree))


def test_deepconf_s_window_is_2048_for_traces_that_think() -> None:
    thinking = [Node(id=1, parent=0, depth=1, text="", thinking="hm", confidences=(1.0,) * 100)]
    plain = [replace(thinking[0], thinking=None)]
    assert window_for(SearchConfig(strategy="deepconf"), thinking) == THINKING_WINDOW == 2048
    assert window_for(SearchConfig(strategy="deepconf"), plain) == 12
    assert window_for(SearchConfig(strategy="deepconf", confidence_window=64), thinking) == 64


async def test_deepconf_on_a_thinking_model_scores_with_the_long_window(
    recording: Callable[..., Recording],
) -> None:
    with capture_logs() as events:
        await search(PROBLEMS["c3"], recording(*THINK), config("deepconf", n=4))
    (threshold,) = [event for event in events if event["event"] == "deepconf_threshold"]
    assert threshold["window"] == 2048


async def test_a_template_that_opens_the_thinking_gets_no_second_open_tag(
    recording: Callable[..., Recording],
) -> None:
    """DeepSeek-R1 distills' templates end the prompt with the open tag."""
    policy = recording(*THINK, prompt_template="Problem: {question}\n<think>\n")
    result = await search(PROBLEMS["a5"], policy, config(n=1, thinking_budget=30))
    thinking, answer = policy.bodies
    (node,) = traces(result.tree)
    assert answer["prompt"] == f"{thinking['prompt']}{node.thinking}\n</think>\n\nFinal Answer:"
    assert answer["prompt"].count("<think>") == 1 and node.answer is not None


# -- a judge that thinks; follow-up requests that a failure or a deadline stops ---------------


async def test_a_judge_that_thought_and_replied_keeps_its_judgement(
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """gen-select under a thinking budget: a judgement whose thinking closed within T and
    whose reply finished names its solution, though it states no answer; no answer request
    replaces it."""
    prompts: list[str] = []

    async def reply(path: str, body: dict[str, Any]) -> Any:
        prompt, n = body["prompt"], body["n"]
        prompts.append(prompt)
        if prompt.endswith("Final Answer:"):
            return completion(" \\boxed{7}")
        if "Judgment: IDX" in prompt:
            return completion(*["<think>\nSolution 1 checks out.\n</think>\n\nJudgment: 1"] * n)
        solutions = [f"<think>\nworking {i}\n</think>\n\nThe answer is {10 + i % 2}." for i in range(n)]
        return completion(*solutions)

    async with scripted_server(reply) as url:
        chosen = replace(config("gen-select", thinking_budget=500), select_k=4)
        result = await search(PROBLEMS["a5"], make_policy(url, "m"), chosen)
    assert not any(prompt.endswith("Final Answer:") for prompt in prompts)
    (judge,) = [node for node in traces(result.tree) if node.shown is not None]
    assert judge.requests == 1 and judge.text == "Judgment: 1" and judge.thinking == "Solution 1 checks out."
    assert judge.shown is not None and judge.chosen == judge.shown[1]
    assert result.answer == "11"


@pytest.mark.parametrize("stop", ["error", "deadline"])
async def test_traces_whose_answer_request_never_came_back_are_kept(
    stop: str, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """The thinking request served four traces cut at T; their answer requests fail, or
    stall until the deadline: the four traces (paid for) stay in the tree, without an
    answer, and the search stops as the failure or the deadline says."""
    release = anyio.Event()

    async def reply(path: str, body: dict[str, Any]) -> Any:
        if body["prompt"].endswith("Final Answer:"):
            if stop == "error":
                raise web.HTTPBadRequest(text="no answers today")
            await release.wait()
        return completion(*["<think>\nFirst guess: \\boxed{3}. Let me"] * body["n"], finish="length")

    async with scripted_server(reply) as url:
        try:
            held = config(thinking_budget=30, budget=BudgetLimits(deadline_s=2.0))
            result = await search(PROBLEMS["a5"], make_policy(url, "m"), held)
        finally:
            release.set()
    assert result.stopped_by == stop and result.answer is None
    nodes = traces(result.tree)
    assert len(nodes) == 4
    for node in nodes:
        assert node.thinking == "First guess: \\boxed{3}. Let me" and node.answer is None
        assert (node.requests, node.tokens, node.finish_reason) == (1, 10, "length")


async def test_a_streamed_trace_whose_template_opened_the_thinking_answers_from_its_reply(
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """A chat server with no reasoning parser whose template opened the thinking sends only
    its close tag: online DeepConf's streamed traces (after a warm-up that answered 7 and
    8) split as whole answers do, so their answer is the reply's, never the thinking's
    boxed first guess."""
    thought = "First guess: \\boxed{1000}.\n\nit looks like 10.\n</think>\n\n"
    words = re.findall(r"\S+\s*|\s+", f"{thought}The answer is 10.")
    tops = [{"token": w, "logprob": -0.1, "top_logprobs": [{"token": w, "logprob": -0.1}]} for w in words]
    usage = {"prompt_tokens": 20, "completion_tokens": len(words)}

    async def reply(path: str, body: dict[str, Any]) -> Any:
        if body.get("stream"):
            events: list[Any] = [
                {"choices": [{"index": 0, "delta": {"content": w}, "logprobs": {"content": [top]}}]}
                for w, top in zip(words, tops, strict=True)
            ]
            return [*events, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {"choices": [], "usage": usage}]  # fmt: skip
        said = [f"{thought}The answer is {7 + i}." for i in range(body["n"])]
        messages = [{"role": "assistant", "content": text} for text in said]
        choices = [{"index": i, "message": message, "finish_reason": "stop", "logprobs": {"content": tops}}
                   for i, message in enumerate(messages)]  # fmt: skip
        return {"choices": choices, "usage": usage | {"completion_tokens": len(words) * body["n"]}}

    async with scripted_server(reply) as url:
        online = replace(config("deepconf", n=4), deepconf_warmup=2)
        result = await search(PROBLEMS["a5"], make_policy(url, "m", api="chat"), online)
    nodes = traces(result.tree)
    assert [node.answer for node in nodes] == ["7", "8", "10", "10"] and result.answer == "10"
    for node in nodes:
        assert node.thinking == "First guess: \\boxed{1000}.\n\nit looks like 10."
        assert node.text == f"The answer is {node.answer}."


async def test_a_streamed_trace_without_usage_or_logprobs_is_charged_its_thinking_too(
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """A stream that sends neither usage nor logprobs is charged an upper bound of its tokens:
    the thinking sent apart (``reasoning_content``) counts as well as the reply, with the tags a
    reasoning parser took out, so a budget still holds (it counted the reply alone)."""
    thought = "Let me think this through at some length before I answer. " * 4

    async def reply(path: str, body: dict[str, Any]) -> Any:
        if body.get("stream"):
            thinking = [{"choices": [{"index": 0, "delta": {"reasoning_content": thought}}]}]
            answer = [{"choices": [{"index": 0, "delta": {"content": "The answer is 10."}}]}]
            return [*thinking, *answer, {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
        said = {"role": "assistant", "reasoning_content": thought, "content": "The answer is 10."}
        tops = {
            "content": [{"token": "x", "logprob": -0.1, "top_logprobs": [{"token": "x", "logprob": -0.1}]}]
        }
        choices = [
            {"index": i, "message": said, "finish_reason": "stop", "logprobs": tops} for i in range(body["n"])
        ]
        return {"choices": choices}  # the warm-up's traces carry logprobs; the streamed one none

    async with scripted_server(reply) as url:
        online = replace(config("deepconf", n=3), deepconf_warmup=2, deepconf_stop=None)
        result = await search(PROBLEMS["a5"], make_policy(url, "m", api="chat"), online)
    nodes = traces(result.tree)  # the streamed trace is kept, though DeepConf then refuses it
    assert len(nodes) == 3 and all(node.thinking == thought.strip() for node in nodes)
    assert result.error is not None and "logprobs" in result.error
    sent = len(f"<think>{thought}</think>The answer is 10.".encode())
    assert result.usage.completion_tokens >= sent  # the warm-up's two logprob entries, and the stream's bound
