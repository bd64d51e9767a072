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
from treesearch.engine.thinking import ThinkingSplitter, ThinkTags
from treesearch.engine.tree import ROOT
from treesearch.errors import ConfigError
from treesearch.evaluate.report import read_run, render, summarise

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
    events = [{"choices": [{"index": 0, "text": text, "finish_reason": None}]} for text in texts]
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
