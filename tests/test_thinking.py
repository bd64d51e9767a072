"""Thinking traces: the think-tag rules on whole and streamed text, the thinking read in its
three forms (reasoning_content, reasoning, tags; whole and streamed) from the synthetic
server, kept on the tree's nodes, never read for an answer, and counted in the usage and
the rows, with budgets held."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from conftest import PROBLEMS, server_stats
from hypothesis import given
from hypothesis import strategies as st
from stub_server import stub_server

from treesearch import BudgetLimits, Prefix, SamplingParams, SearchConfig, search
from treesearch.backends.fake.tasks import count_tokens
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.engine.budget import Usage
from treesearch.engine.budget_forcing import opened_by
from treesearch.engine.thinking import ThinkingSplitter, ThinkTags
from treesearch.engine.tree import ROOT
from treesearch.errors import ConfigError
from treesearch.evaluate.report import read_run, render, summarise
from treesearch.problems import Problem

pytestmark = pytest.mark.anyio

TAGS = ThinkTags()
# The three forms: where the server puts the thinking, and the API that reads it.
FORMS = [
    pytest.param("completions", (), id="tags"),
    pytest.param("chat", (), id="reasoning_content"),
    pytest.param("chat", ("--reasoning-field", "reasoning"), id="reasoning"),
]
THINKING = ("--think", "40")
DECOY = re.compile(r"First guess: \\boxed\{(\S+?)\}")


@pytest.mark.parametrize(
    ("text", "inside", "thinking", "reply"),
    [
        ("<think>\nx\n</think>\n\nThe answer is 4.", False, "x", "The answer is 4."),
        ("  <think>x</think>y", False, "x", "y"),
        ("<think>cut by max_tokens \\boxed{2}", False, "cut by max_tokens \\boxed{2}", ""),
        ("started in the template</think>\n\ny", False, "started in the template", "y"),
        ("went on</think>y", True, "went on", "y"),
        ("still thinking", True, "still thinking", ""),
        ("Sure. <think>t</think> So 3.", False, "t", "Sure.  So 3."),
        ("<think>a</think>b<think>c</think>d", False, "ac", "bd"),
        ("<think></think>\n\nanswer", False, None, "\n\nanswer"),
        ("x < 3, y <thin", False, None, "x < 3, y <thin"),
    ],
)
def test_the_think_tag_rules(text: str, inside: bool, thinking: str | None, reply: str) -> None:
    assert TAGS.split(text, inside=inside) == (thinking, reply)


@given(st.text(alphabet="ab \n<>/thinkTHINK", max_size=40))
def test_a_text_without_tags_is_its_own_reply_byte_for_byte(text: str) -> None:
    if "<think>" not in text and "</think>" not in text:
        assert TAGS.split(text) == (None, text)


@given(
    lead=st.sampled_from(["", "\n", "<think>", "  <think>\n"]),
    body=st.lists(st.sampled_from(["a", " ", "\n", "<", "/", "think", ">", "</think>", "<think>", "b."])),
    cuts=st.lists(st.integers(0, 200)),
)
def test_a_stream_splits_as_the_whole_text_does(lead: str, body: list[str], cuts: list[int]) -> None:
    """Cut anywhere into pieces, a text that opens its thinking first (or never closes one
    unopened) splits the same streamed as whole."""
    text = lead + "".join(body)
    close = text.find("</think>")
    if close >= 0 and "<think>" not in text[:close]:
        return  # a close tag with no open tag before it: read only in whole texts
    bounds = sorted({0, len(text), *(cut % (len(text) + 1) for cut in cuts)})
    splitter = ThinkingSplitter(TAGS)
    parts = [splitter.feed(text[a:b]) for a, b in itertools.pairwise(bounds)]
    parts.append(splitter.flush())
    thinking = "".join(t for t, _ in parts)
    reply = "".join(r for _, r in parts)
    expected = TAGS.split(text)
    assert (thinking.strip() or None, reply.lstrip() if thinking.strip() else reply) == expected


@pytest.mark.parametrize("given_tags", ["<think>", "<t>,<t>", ",</think>", "[,[/]", "<t>,<t>,</t>"])
def test_bad_think_tags_are_refused(given_tags: str) -> None:
    with pytest.raises(ConfigError):
        ThinkTags.parse(given_tags)


@pytest.mark.parametrize(("api", "flags"), FORMS)
async def test_the_thinking_is_read_in_each_form_whole_and_streamed(
    api: str,
    flags: tuple[str, ...],
    fake_server: Callable[..., str],
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    policy = make_policy(fake_server(*THINKING, *flags), api=api)
    prefix = Prefix(problem=PROBLEMS["a3"])
    params = SamplingParams(max_tokens=400, stop=(), seed=5)
    generation = await policy.generate(prefix, 3, params)
    for choice in generation.choices:
        assert choice.thinking is not None and choice.thinking.startswith("First guess: \\boxed{")
        assert "<think>" not in choice.thinking and "</think>" not in choice.thinking
        assert re.fullmatch(r"The answer is \S+\.", choice.text)
    assert generation.reasoning_tokens == sum(count_tokens(c.thinking or "") for c in generation.choices)
    # streamed: the same choice (seed 5, its first), its thinking in pieces of its own
    thinking, text, reported = "", "", None
    async with aclosing(policy.stream(prefix, params)) as pieces:
        async for piece in pieces:
            thinking, text = thinking + piece.thinking, text + piece.text
            reported = piece.reasoning_tokens if piece.reasoning_tokens is not None else reported
    first = generation.choices[0]
    assert (thinking.strip(), text.strip()) == (first.thinking, first.text)
    assert reported == count_tokens(first.thinking or "")


async def test_a_prompt_that_opens_the_thinking_is_continued_inside_it(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """DeepSeek-R1 distills' templates end the prompt with the open tag: the text then
    starts inside the thinking, and only its close tag shows where the thinking ends."""
    template = "Problem: {question}\n<think>\n"
    policy = make_policy(fake_server(*THINKING), prompt_template=template)
    params = SamplingParams(max_tokens=400, stop=())
    generation = await policy.generate(Prefix(problem=PROBLEMS["a3"]), 2, params)
    for choice in generation.choices:
        assert choice.thinking is not None and choice.thinking.startswith("First guess")
        assert choice.text.startswith("The answer is")


def streamed(*texts: str) -> Callable[[str, str, dict[str, str]], tuple[int, Any]]:
    """A server that streams ``texts`` as a completion's pieces, then its finish and usage."""
    events: list[dict[str, Any]] = [{"choices": [{"index": 0, "text": text, "finish_reason": None}]}
                                    for text in texts]  # fmt: skip
    events += [{"choices": [{"index": 0, "text": "", "finish_reason": "length"}]},
               {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": len(texts)}}]  # fmt: skip
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    body = "".join([*lines, "data: [DONE]\n\n"]).encode()
    return lambda method, path, headers: (200, body)


@pytest.mark.parametrize(
    ("texts", "thinking", "text"),
    [(("x ", "<"), "", "x <"), (("<think>", "t", "</thi"), "t</thi", "")],
    ids=["a reply ending in what might start a tag", "a thinking cut inside its close tag"],
)
async def test_what_a_stream_held_back_comes_at_its_end(
    texts: tuple[str, ...], thinking: str, text: str, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    with stub_server(streamed(*texts)) as url:
        policy = make_policy(url)
        async with aclosing(policy.stream(Prefix(problem=PROBLEMS["a1"]), SamplingParams())) as pieces:
            got = [piece async for piece in pieces]
    assert "".join(p.thinking for p in got) == thinking and "".join(p.text for p in got) == text
    assert got[-1].tokens is None and (got[-1].thinking or got[-1].text)  # the held part, last


def config(strategy: str = "majority-vote", **options: Any) -> SearchConfig:
    return SearchConfig(strategy=strategy, sampling=SamplingParams(seed=3), **options)


@pytest.mark.parametrize(("api", "flags"), FORMS)
async def test_the_answer_is_read_from_the_reply_never_from_the_thinking(
    api: str,
    flags: tuple[str, ...],
    fake_server: Callable[..., str],
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """Every trace's thinking starts with a wrong boxed guess, which the answer rules would
    take over "The answer is X." were the thinking read; this task's traces all end right."""
    policy = make_policy(fake_server(*THINKING, *flags), api=api)
    result = await search(PROBLEMS["sure2"], policy, config(n=8))
    assert result.tree is not None
    nodes = [node for node in result.tree.nodes() if node.id != ROOT]
    assert len(nodes) == 8
    for node in nodes:
        assert node.thinking is not None
        decoy = DECOY.search(node.thinking)
        assert decoy is not None and node.answer != decoy.group(1)
        assert node.text == f"The answer is {node.answer}."
        # the server's count for the request, shared by the length of each thinking
        assert node.reasoning_tokens == pytest.approx(count_tokens(node.thinking), rel=0.1)
    assert result.answer == PROBLEMS["sure2"].answer
    tree = result.tree.to_json()
    assert all("thinking" in node and "reasoning_tokens" in node for node in tree["nodes"])


@pytest.mark.parametrize(("api", "flags"), FORMS)
async def test_a_streamed_trace_keeps_its_thinking_apart(
    api: str,
    flags: tuple[str, ...],
    fake_server: Callable[..., str],
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """Online DeepConf streams its traces (Proposals.stream_child)."""
    policy = make_policy(fake_server(*THINKING, *flags), api=api)
    result = await search(PROBLEMS["c3"], policy, config("deepconf", n=6, deepconf_warmup=2))
    assert result.tree is not None
    streamed = [node for node in result.tree.nodes() if node.id != ROOT]
    assert streamed and all(node.thinking and "\\boxed" in node.thinking for node in streamed)
    finished = [node for node in streamed if node.finish_reason in ("stop", "eos")]
    assert finished and all(node.text == f"The answer is {node.answer}." for node in finished)
    assert result.usage.reasoning_tokens > 0


async def test_reasoning_tokens_are_counted_in_the_usage_and_the_rows(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(*THINKING))
    result = await search(PROBLEMS["a7"], policy, config(n=4))
    assert result.tree is not None
    thought = sum(count_tokens(node.thinking or "") for node in result.tree.nodes())
    usage = result.usage
    assert usage.reasoning_tokens == thought and not usage.reasoning_estimated
    assert 0 < usage.reasoning_tokens < usage.completion_tokens
    assert result.to_record()["usage"]["reasoning_tokens"] == thought
    assert Usage.from_record(result.to_record()["usage"]) == usage


@pytest.mark.parametrize("flags", [THINKING, ()], ids=["thinking", "not thinking"])
async def test_the_report_has_a_reasoning_column_where_a_model_thought(
    flags: tuple[str, ...],
    tmp_path: Path,
    fake_server: Callable[..., str],
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    policy = make_policy(fake_server(*flags))
    rows = [(await search(PROBLEMS[f"a{i}"], policy, config(n=2))).to_record() for i in range(3)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    [line] = summarise([read_run(path)])
    mean = sum(row["usage"].get("reasoning_tokens", 0) for row in rows) / 3
    assert line.reasoning_tokens == pytest.approx(mean) and (mean > 0) == bool(flags)
    headers = render([line], "table").splitlines()[0].split()
    assert ("reasoning" in headers) == bool(flags)


async def test_a_run_without_thinking_writes_the_usage_it_always_did(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    result = await search(PROBLEMS["a7"], make_policy(fake_server()), config(n=4))
    assert list(result.to_record()["usage"]) == [
        "prompt_tokens", "completion_tokens", "requests", "estimated", "verifier_tokens"
    ]  # fmt: skip
    assert result.tree is not None and all(node.thinking is None for node in result.tree.nodes())


async def test_without_a_server_count_the_thinking_s_share_is_estimated(
    fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    policy = make_policy(fake_server(*THINKING, "--no-usage"))
    result = await search(PROBLEMS["a7"], policy, config(n=4))
    usage = result.usage
    assert usage.reasoning_estimated and usage.estimated
    assert 0 < usage.reasoning_tokens < usage.completion_tokens
    assert result.to_record()["usage"]["reasoning_estimated"] is True


@pytest.mark.parametrize("limit", [150, 400, 1000])
async def test_budgets_hold_with_thinking(
    limit: int, fake_server: Callable[..., str], make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """Thinking tokens are completion tokens: reserved under max_tokens, charged as served."""
    upstream = fake_server("--think", "120")
    before = server_stats(upstream)
    policy = make_policy(upstream)
    result = await search(PROBLEMS["b5"], policy, config(n=8, budget=BudgetLimits(tokens=limit)))
    after = server_stats(upstream)
    assert result.usage.total_tokens <= limit
    assert result.usage.completion_tokens == after["completion_tokens"] - before["completion_tokens"]


# -- what a server counts, and a question that quotes a tag -------------------------------------

USAGE = {"prompt_tokens": 9, "completion_tokens": 8}
# the reply as one token, for DeepConf (its thinking comes without logprobs)
LOGPROBS = {"content": [{"token": "7", "logprob": -0.1, "top_logprobs": [{"token": "7", "logprob": -0.1}]}]}
THOUGHT = {"role": "assistant", "content": "The answer is 7.", "reasoning_content": "I think \\boxed{1000}."}


def reasoned(usage: dict[str, Any]) -> Callable[[str, str, dict[str, str]], tuple[int, Any]]:
    """A chat server whose one choice thought apart, with ``usage``."""
    choice = {"index": 0, "finish_reason": "stop", "message": THOUGHT, "logprobs": LOGPROBS}
    body = {"object": "chat.completion", "choices": [choice], "usage": usage}
    return lambda method, path, headers: (200, body)


def reasoned_stream(usage: dict[str, Any]) -> Callable[[str, str, dict[str, str]], tuple[int, Any]]:
    """The same choice streamed: its thinking, its reply, its finish, then ``usage``."""
    deltas = [{"reasoning_content": THOUGHT["reasoning_content"]}, {"content": THOUGHT["content"]}]
    events: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": d, "finish_reason": None,
                                                  "logprobs": LOGPROBS if "content" in d else None}]}
                                    for d in deltas]  # fmt: skip
    events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
               {"choices": [], "usage": usage}]  # fmt: skip
    body = "".join([*(f"data: {json.dumps(event)}\n\n" for event in events), "data: [DONE]\n\n"]).encode()
    return lambda method, path, headers: (200, body)


@pytest.mark.parametrize(
    ("count", "expected"),
    [(5, 5), (40, 8), (-50, None), (float("nan"), None), ("12a", None), (True, None), (float("inf"), None)],
    ids=["in range", "above completion", "negative", "NaN", "a string", "a bool", "infinite"],
)
async def test_a_server_s_reasoning_count_is_clamped_or_ignored(
    count: Any, expected: int | None, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """A reasoning count above the completion tokens (which include it) is clamped to them,
    one that is no count (negative, not a finite number) ignored: the thinking's share is
    then estimated. The rest of the usage stands."""
    usage = USAGE | {"completion_tokens_details": {"reasoning_tokens": count}}
    prefix, params = Prefix(problem=PROBLEMS["a1"]), SamplingParams()
    with stub_server(reasoned(usage)) as url:
        generation = await make_policy(url, api="chat").generate(prefix, 1, params)
    assert (generation.prompt_tokens, generation.completion_tokens, generation.estimated) == (9, 8, False)
    assert generation.reasoning_tokens == expected
    with stub_server(reasoned_stream(usage)) as url:
        pieces = [piece async for piece in make_policy(url, api="chat").stream(prefix, params)]
    (last,) = [piece for piece in pieces if piece.completion_tokens is not None]
    assert (last.prompt_tokens, last.completion_tokens, last.reasoning_tokens) == (9, 8, expected)


@pytest.mark.parametrize(
    ("usage", "estimated"),
    [
        (USAGE | {"completion_tokens_details": {"reasoning_tokens": "12a"}}, False),
        ({"prompt_tokens": 9, "completion_tokens": float("nan")}, True),
        ({"prompt_tokens": "9", "completion_tokens": 8}, True),
        ({"prompt_tokens": 9, "completion_tokens": -8}, True),
        (USAGE | {"completion_tokens_details": [1]}, False),
    ],
    ids=["reasoning a string", "completion NaN", "prompt a string", "completion negative", "details a list"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_malformed_usage_is_charged_never_lost(
    usage: dict[str, Any], estimated: bool, stream: bool, make_policy: Callable[..., OpenAIPolicy]
) -> None:
    """A usage whose counts are not counts stops nothing: the request is charged what it
    reported, or, without a prompt or completion count to trust, what a request without
    usage is charged (streamed: online DeepConf's second trace)."""

    async def charged(usage: dict[str, Any]) -> Usage:
        answers = [reasoned(usage), reasoned_stream(usage)]
        posts = itertools.count()  # online DeepConf: one whole warm-up trace, then one streamed
        with stub_server(lambda *asked: answers[min(next(posts), 1) if stream else 0](*asked)) as url:
            chosen = config("deepconf", n=2, deepconf_warmup=1, deepconf_stop=None) if stream else config(n=1)
            result = await search(PROBLEMS["a1"], make_policy(url, api="chat"), chosen)
        assert result.error is None and result.answer == "7"
        return result.usage

    got = await charged(usage)
    assert got.estimated is estimated and got.reasoning_estimated
    if estimated:
        assert got == await charged({})
    else:
        assert (got.prompt_tokens, got.completion_tokens) == (9 * (1 + stream), 8 * (1 + stream))


async def test_a_tag_the_question_quotes_opens_no_thinking(
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """Only the prompt's end counts: a question that mentions ``<think>`` leaves the reply a
    reply, while a template that opens the thinking after it (DeepSeek-R1's) and steps that
    stopped within one still start the text inside it."""
    question = "What does the tag <think> open? Say 7."
    assert not TAGS.opened_in(f"Problem: {question}\n\nSolution:\n", question)
    assert TAGS.opened_in(f"Problem: {question}\n<think>\n", question)
    assert TAGS.opened_in(f"Problem: {question}\n<think>\nstep one\n\n", question)
    assert not TAGS.opened_in(f"Problem: {question}\n<think>\nx\n</think>\n\n", question)
    quoting_the_close = "Why end with </think>?"
    assert TAGS.opened_in(f"Problem: {quoting_the_close}\n<think>\n", quoting_the_close)
    prefix = Prefix(problem=Problem(id="q", question=question, answer="7"))
    choices = [{"index": 0, "text": "The answer is 7.", "finish_reason": "stop"}]
    answer = {"object": "text_completion", "choices": choices, "usage": USAGE}
    with stub_server(lambda method, path, headers: (200, answer)) as url:
        (choice,) = (await make_policy(url).generate(prefix, 1, SamplingParams())).choices
    assert (choice.thinking, choice.text) == (None, "The answer is 7.")
    with stub_server(streamed("The answer ", "is 7.")) as url:
        pieces = [piece async for piece in make_policy(url).stream(prefix, SamplingParams())]
    assert "".join(p.thinking for p in pieces) == "" and "".join(p.text for p in pieces) == "The answer is 7."
    # a thinking budget reads the prompt's end alike
    assert not opened_by(make_policy(url), prefix)
    assert opened_by(make_policy(url, prompt_template="Problem: {question}\n<think>\n"), prefix)


@pytest.mark.parametrize(("api", "flags"), FORMS)
async def test_without_usage_the_thinking_is_charged_within_the_bound(
    api: str,
    flags: tuple[str, ...],
    fake_server: Callable[..., str],
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    """A server that sends no usage is charged an upper bound of every choice's tokens: its
    thinking's too, sent apart or in tags, so a budget still holds."""
    upstream = fake_server(*THINKING, *flags, "--no-usage")
    before = server_stats(upstream)
    params = SamplingParams(seed=2, max_tokens=400, stop=())
    generation = await make_policy(upstream, api=api).generate(Prefix(problem=PROBLEMS["a3"]), 4, params)
    served = server_stats(upstream)["completion_tokens"] - before["completion_tokens"]
    assert generation.estimated and all(choice.thinking for choice in generation.choices)
    assert served <= generation.completion_tokens <= 4 * params.max_tokens


def test_a_rerun_with_other_think_tags_is_refused(fake_server: Callable[..., str], tmp_path: Path) -> None:
    """The think tags decide what is thinking and so which answer a row holds: a rerun onto the
    same output with other tags is another run, refused as another configuration is; the
    default tags leave the rows' config as it was before they were recorded."""
    from conftest import problems, run_cli, write_problems

    chosen = write_problems(tmp_path / "p.jsonl", problems("a", 2))
    base = ["run", "--base-url", fake_server(), "--model", "fake", "--problems", str(chosen),
            "--output", str(tmp_path / "out.jsonl"), "--n", "2", "--seed", "1"]  # fmt: skip
    assert run_cli(*base).returncode == 0
    row = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert "think_tags" not in row["config"]["policy"]
    again = run_cli(*base)
    assert again.returncode == 0 and "2 already done" in again.stderr
    other = run_cli(*base, "--think-tags", "<reasoning>,</reasoning>")
    assert other.returncode == 2 and "another configuration" in other.stderr
    assert "think_tags" in other.stderr
