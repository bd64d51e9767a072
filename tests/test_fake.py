"""The synthetic server's pure parts, without HTTP: the fault stream, cutting a reply, the
stream chunks of a choice and the model's greedy answer. (The server as a whole is exercised
through its HTTP API by every test that uses the ``fake_server`` fixture.)"""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treesearch.backends.fake.choices import GOOD_LOGPROB, cut, render_choice, token_events
from treesearch.backends.fake.faults import FAULT_KINDS, FaultDraws
from treesearch.backends.fake.tasks import TOKEN, FakeTask, count_tokens, reply
from treesearch.backends.fake.thinking import TAGS, ThinkingModel, thinking_reply

KINDS = ("429", "503", *FAULT_KINDS)
WORDS = st.lists(st.sampled_from(["Step", "1", ":", "this", "points", "to", "42", ".", "\n\n"]), max_size=30)


@given(seed=st.integers(0, 2**32), n=st.integers(1, 8))
def test_a_fault_stream_repeats_for_its_seed_and_fewer_keeps_at_least_one(seed: int, n: int) -> None:
    first, second = FaultDraws(0.7, KINDS, seed), FaultDraws(0.7, KINDS, seed)
    drawn = [first.draw(n) for _ in range(50)]
    assert drawn == [second.draw(n) for _ in range(50)]
    assert n > 1 or "fewer" not in drawn  # one choice cannot be fewer
    if n > 1:
        assert all(1 <= first.fewer(n) <= n - 1 for _ in range(20))


def test_no_fault_rate_draws_nothing() -> None:
    assert {FaultDraws(0.0, KINDS, 1).draw(4) for _ in range(100)} == {None}


@given(words=WORDS, stop=st.sampled_from(["", "\n\n", "points", "Step"]), max_tokens=st.integers(0, 40))
def test_cut_keeps_to_the_stop_and_the_token_limit(words: list[str], stop: str, max_tokens: int) -> None:
    text = " ".join(words)
    before_stop = text.split(stop)[0] if stop else text
    kept, finish, stop_reason = cut(text, [stop], max_tokens)
    assert before_stop.startswith(kept) and count_tokens(kept) <= max_tokens
    assert finish == ("length" if count_tokens(before_stop) > max_tokens else "stop")
    assert stop_reason == (stop if finish == "stop" and stop and stop in text else None)


@given(words=WORDS, chat=st.booleans(), logprobs=st.sampled_from([None, 1]))
def test_a_choice_streams_token_by_token(words: list[str], chat: bool, logprobs: int | None) -> None:
    text = " ".join(words)
    tops = [{token: GOOD_LOGPROB} for token in TOKEN.findall(text)]
    choice = render_choice(3, text, "stop", None, chat=chat, logprobs=logprobs, yes=None, tops=tops)
    events = token_events(choice, chat)
    pieces = [event["delta"].get("content", "") if chat else event["text"] for event in events]
    assert "".join(pieces) == (text if count_tokens(text) else "")
    assert len(events) == count_tokens(text) + 1
    assert [event["finish_reason"] for event in events] == [None] * count_tokens(text) + ["stop"]
    assert all(("logprobs" in event) == bool(logprobs) for event in events[:-1])


def test_greedy_decoding_takes_the_likeliest_answer_in_every_step() -> None:
    task = FakeTask(steps=3, answers={"7": 0.3, "9": 0.7}, step_error=0.5, early=0.5, gold="9")
    said, yes = reply(task, "Q [task:x].", random.Random(0), True, judge_accuracy=0.9, prm_noise=0.0)
    assert yes is None
    assert said == "Step 1: this points to 9.\n\nStep 2: this points to 9.\n\nThe answer is 9."


# -- thinking -----------------------------------------------------------------------------

THINKER = FakeTask(steps=3, answers={"10": 0.7, "1000": 0.3}, gold="10", think=60)


def think(task: FakeTask, context: str, seed: int, greedy: bool = False, wait_fix: float = 0.0) -> str:
    said = thinking_reply(task, context, random.Random(seed), greedy, ThinkingModel(wait_fix=wait_fix))
    assert said is not None
    return said


@given(seed=st.integers(0, 10_000), length=st.integers(1, 300))
def test_a_trace_thinks_its_length_and_answers_after_the_end_tag(seed: int, length: int) -> None:
    said = think(FakeTask(answers={"10": 0.5, "1000": 0.5}, gold="10", think=length), "Q.", seed)
    thinking, reply = TAGS.split(said)
    assert thinking is not None and said.startswith("<think>\nFirst guess: \\boxed{1000}.")
    paragraphs = thinking.split("\n\n")
    assert len(paragraphs) >= 2 and count_tokens(thinking) >= length
    assert count_tokens("\n\n".join(paragraphs[:-1])) < max(length, count_tokens(paragraphs[0]) + 1)
    last = re.findall(r"looks like (\S+)\.", thinking)[-1]
    assert reply == f"The answer is {last}."


def test_a_task_without_thinking_or_a_question_is_not_thought_about() -> None:
    model = ThinkingModel()
    assert thinking_reply(FakeTask(), "Q.", random.Random(0), False, model) is None
    asked = "Step 1: this points to 10.\n\nQuestion: is the step right? Answer Yes or No. Answer:"
    assert thinking_reply(THINKER, asked, random.Random(0), False, model) is None
    assert thinking_reply(THINKER, "Q.", random.Random(0), False, ThinkingModel(think=5)) is not None
    assert ThinkingModel(think=5).of(FakeTask()) == (5, 0.0)


def test_a_cut_thinking_is_answered_with_its_last_claim_and_accuracy_rises_with_its_length() -> None:
    """The budget's cut (max_tokens T), then the end tag and a cue: the answer is what the
    thinking had reached, so accuracy rises with T until the whole trace fits, then stays."""
    accuracy = {}
    for budget in (3, 25, 40, 55, 90, 200):
        right = 0
        for seed in range(300):
            kept, finish, _ = cut(think(THINKER, "Q.", seed), [], budget)
            if finish == "length":  # cut: end the thinking, ask for the answer
                kept = think(THINKER, "Q." + kept.split("</think>")[0] + "\n</think>\n\nFinal Answer:", seed)
            right += kept.endswith("The answer is 10.")
        accuracy[budget] = right / 300
    assert accuracy[3] == 0.0  # no claim yet: the wrong first guess
    assert accuracy[3] < accuracy[25] < accuracy[40] < accuracy[55] < accuracy[90]
    assert accuracy[90] == accuracy[200] == pytest.approx(0.7, abs=0.08)


@pytest.mark.parametrize(("wait_fix", "answer"), [(1.0, "10"), (0.0, "1000")])
def test_wait_continues_the_thinking_and_may_fix_a_wrong_answer(wait_fix: float, answer: str) -> None:
    context = "Q.<think>\nFirst guess: \\boxed{1000}.\n\nLet me check step 2: it looks like 1000.\n\nWait"
    said = think(THINKER, context, 0, wait_fix=wait_fix)
    assert said.startswith(f", let me check again: it looks like {answer}.")
    assert said.endswith(f"\n</think>\n\nThe answer is {answer}.")
    thinking, reply = TAGS.split(said, inside=True)
    assert thinking is not None and reply == f"The answer is {answer}."


def test_a_thinking_stopped_after_a_paragraph_goes_on_with_the_rest_of_its_trace() -> None:
    whole = think(THINKER, "Q.", 4, greedy=True)
    first = whole[: whole.index("\n\n", whole.index("\n\n") + 2) + 2]  # the open tag and two paragraphs
    assert first + think(THINKER, "Q." + first, 4, greedy=True) == whole


def test_a_chat_choice_streams_its_thinking_first_in_its_own_field() -> None:
    said = think(THINKER, "Q.", 1)
    thinking, reply = TAGS.split(said)
    assert thinking is not None
    tokens = TOKEN.findall(thinking) + TOKEN.findall(reply)
    tops = [{t: GOOD_LOGPROB} for t in tokens]
    choice = render_choice(0, reply, "stop", None, chat=True, logprobs=True, yes=None, tops=tops,
                           thinking=("reasoning", thinking))  # fmt: skip
    assert choice["message"] == {"role": "assistant", "content": reply, "reasoning": thinking}
    events = token_events(choice, chat=True)[:-1]
    fields = [next(iter(event["delta"])) for event in events]
    assert fields == ["reasoning"] * count_tokens(thinking) + ["content"] * count_tokens(reply)
    assert "".join(event["delta"].get("reasoning", "") for event in events).strip() == thinking
    assert len(events) == len(choice["logprobs"]["content"]) == len(tokens)
