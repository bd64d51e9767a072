"""The synthetic server's pure parts, without HTTP: the fault stream, cutting a reply, the
stream chunks of a choice and the model's greedy answer. (The server as a whole is exercised
through its HTTP API by every test that uses the ``fake_server`` fixture.)"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from treesearch.backends.fake.choices import GOOD_LOGPROB, cut, render_choice, token_events
from treesearch.backends.fake.faults import FAULT_KINDS, FaultDraws
from treesearch.backends.fake.tasks import TOKEN, FakeTask, count_tokens, reply

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
