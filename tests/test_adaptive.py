"""The compute-optimal layer: difficulty bins fitted on one set and applied to another, the
policy table fitted on a calibration set, saved, reloaded and used, with the probe charged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import problems, run_cli, write_problems

from treesearch import (
    BudgetLimits,
    CallableVerifier,
    ConfigError,
    Problem,
    SamplingParams,
    SearchConfig,
    run,
    search,
)
from treesearch.backends.openai_compat import OpenAIPolicy
from treesearch.backends.verifiers import PoolingPRM
from treesearch.engine.budget import Budget
from treesearch.engine.context import SearchContext
from treesearch.engine.search import run_strategy
from treesearch.engine.steps import StepFormat
from treesearch.engine.tree import ROOT
from treesearch.optimal.choose import check_config, difficulty
from treesearch.optimal.difficulty import Cell, DifficultyBins, PolicyTable
from treesearch.optimal.fit import GridCell, fit_policy_table, probe_difficulty

pytestmark = pytest.mark.anyio

# Easy ("c": right answer 75%) and hard ("s": wrong answers likelier, steps that err).
GRID = (GridCell(strategy="majority-vote"), GridCell(strategy="beam", options={"beam_width": 2}))


def test_bins_fitted_on_one_set_apply_to_another() -> None:
    bins = DifficultyBins.fit([i / 99 for i in range(100)], "oracle")
    assert bins.cuts == pytest.approx((0.2, 0.4, 0.6, 0.8))
    other = [0.05, 0.25, 0.45, 0.65, 0.85, 1.0, 0.0]
    assert [bins.level(v) for v in other] == [5, 4, 3, 2, 1, 1, 5]  # 1 is the easiest
    # Ties on a value share a level: half the problems always right, half never.
    tied = DifficultyBins.fit([1.0] * 50 + [0.0] * 50, "oracle")
    assert (tied.level(1.0), tied.level(0.0)) == (1, 3)  # a value on a cut goes to the easier side


def test_a_table_survives_its_file_and_bad_files_are_one_line(tmp_path: Path) -> None:
    cells = {level: {4: Cell(strategy="majority-vote", n=4), 8: Cell(strategy="beam", n=8,
             options={"beam_width": 2}, accuracy=0.5)} for level in range(1, 6)}  # fmt: skip
    table = PolicyTable(bins=DifficultyBins(kind="predicted", cuts=(0.1, 0.2, 0.3, 0.4)), probe_k=3,
                        choices=cells, cv_accuracy={4: 0.5, 8: 0.6})  # fmt: skip
    table.save(tmp_path / "t.json")
    again = PolicyTable.load(tmp_path / "t.json")
    assert again == table
    assert again.choose(3, 12).strategy == "beam" and again.choose(3, 7).n == 4
    with pytest.raises(ConfigError, match="below them"):
        again.choose(3, 2)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        PolicyTable.load(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text(json.dumps({"version": 1, "difficulty": "predicted"}))
    with pytest.raises(ConfigError, match="not a policy table"):
        PolicyTable.load(tmp_path / "short.json")
    with pytest.raises(ConfigError, match="needs a policy table"):
        SearchConfig(strategy="adaptive")
    with pytest.raises(ConfigError, match="drop the aggregator"):
        SearchConfig(strategy="adaptive", n=8, policy_table=table, aggregator="majority")
    # A hand-edited table: a misspelt option, an option of the wrong type, a strategy that is none.
    written = json.loads((tmp_path / "t.json").read_text())
    for edit, message in [
        ({"beam_widht": 2}, "option 'beam_widht' of beam: a cell sets"),
        ({"beam_width": "2"}, "option beam_width='2' of beam: int wanted"),
    ]:
        written["choices"]["1"]["8"]["options"] = edit
        (tmp_path / "edited.json").write_text(json.dumps(written))
        with pytest.raises(ConfigError, match=message):  # when a search would use it
            SearchConfig(strategy="adaptive", n=8, policy_table=PolicyTable.load(tmp_path / "edited.json"))
    written["choices"]["1"]["8"] = {"strategy": "telepathy", "n": 8}
    (tmp_path / "edited.json").write_text(json.dumps(written))
    edited = SearchConfig(strategy="adaptive", n=8, policy_table=PolicyTable.load(tmp_path / "edited.json"))
    with pytest.raises(ConfigError, match="unknown strategy 'telepathy'"):
        check_config(edited, CallableVerifier(lambda problem, steps: 1.0))


async def test_oracle_difficulty_needs_every_gold_answer_up_front(
    make_policy: Callable[..., OpenAIPolicy],
) -> None:
    cells = {level: {4: Cell(strategy="majority-vote", n=4)} for level in range(1, 6)}
    table = PolicyTable(
        bins=DifficultyBins(kind="oracle", cuts=(0.2, 0.4, 0.6, 0.8)), probe_k=2, choices=cells
    )
    unknown = Problem(id="q", question="What is it?")
    with pytest.raises(ConfigError, match="oracle difficulty needs gold answers; problem 'q'"):
        await run([unknown], make_policy("http://127.0.0.1:9/v1"), SearchConfig(strategy="adaptive", n=4,
                  policy_table=table))  # fmt: skip


async def test_the_probe_is_charged_to_the_problem(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    (problem,) = problems("c", 1)
    budget = Budget(BudgetLimits())
    ctx = SearchContext(problem, make_policy(fake_server()), budget, sampling=SamplingParams(seed=1),
                        step_format=StepFormat(), verifier=prm)  # fmt: skip
    value = await difficulty(ctx, 6, "predicted")
    samples = ctx.tree.children(ROOT)
    assert len(samples) == 6 and 0 < value < 1
    assert budget.usage.completion_tokens == sum(node.tokens for node in samples) > 0
    assert budget.usage.requests == 2  # one request of n=6, one PRM call
    assert budget.usage.verifier_tokens > 0


async def test_a_fitted_table_is_saved_reloaded_and_used(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM, tmp_path: Path
) -> None:
    url = fake_server()
    policy = make_policy(url)
    calibration = problems("c", 20) + problems("s", 20)
    base = SearchConfig(whole=False, sampling=SamplingParams(seed=2), step=StepFormat(max_depth=12))
    fitted = await fit_policy_table(calibration, policy, base, budgets=[4, 8], grid=GRID, probe_k=4,
                                    folds=4, verifier=prm)  # fmt: skip
    table = fitted.table
    assert set(table.budgets) == {4, 8} and set(table.cv_accuracy) == {4, 8}
    # Each choice is the best of the grid on its level's calibration problems.
    for level, row in table.choices.items():
        members = [p.id for p in calibration if table.bins.level(fitted.difficulty[p.id]) == level]
        for budget, cell in row.items():
            accuracies = {
                label: sum(bool(r.correct) for r in fitted.results[label, budget] if r.problem_id in members)
                for label in (g.strategy if not g.options else Cell(strategy=g.strategy, n=budget,
                              options=dict(g.options)).label() for g in GRID)
            }  # fmt: skip
            if members:
                assert sum(bool(r.correct) for r in fitted.results[cell.label(), budget]
                           if r.problem_id in members) == max(accuracies.values())  # fmt: skip
    table.save(tmp_path / "table.json")
    reloaded = PolicyTable.load(tmp_path / "table.json")
    assert reloaded == table
    config = SearchConfig(strategy="adaptive", n=8, whole=False, sampling=SamplingParams(seed=9),
                          step=StepFormat(max_depth=12), policy_table=reloaded)  # fmt: skip
    test_set = problems("c", 40)[20:] + problems("s", 40)[20:]  # disjoint from the calibration set
    results = await run(test_set, policy, config, verifier=prm)
    for result in results:
        assert result.choice is not None
        cell = table.choose(result.choice["level"], 8)
        assert (result.choice["strategy"], result.choice["n"]) == (cell.strategy, cell.n)
        assert result.tree is not None
        # The probe's samples are charged but grow no node of the chosen strategy's tree.
        nodes = result.tree.nodes()[1:]
        assert result.usage.completion_tokens > sum(node.tokens for node in nodes) + len(nodes)
    assert len({r.choice["level"] for r in results if r.choice}) > 1


async def test_adaptive_on_the_command_line(fake_server: Callable[..., str], tmp_path: Path) -> None:
    url = fake_server()
    calibration = write_problems(tmp_path / "calib.jsonl", problems("c", 10) + problems("s", 10))
    fitted = run_cli("fit-adaptive", "--base-url", url, "--prm-url", url, "--prm-model", "fake-prm",
                     "--problems", str(calibration), "--output", str(tmp_path / "t.json"),
                     "--budgets", "4", "--folds", "2", "--seed", "1")  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr
    assert "cross-validated accuracy: N=4" in fitted.stderr
    test_set = write_problems(tmp_path / "test.jsonl", problems("c", 15)[10:])
    ran = run_cli("run", "--base-url", url, "--prm-url", url, "--prm-model", "fake-prm", "--strategy",
                  "adaptive", "--n", "4", "--policy-table", str(tmp_path / "t.json"), "--problems",
                  str(test_set), "--output", str(tmp_path / "out.jsonl"), "--sampling", "steps",
                  "--model-params", "7B", "--prm-params", "1.5B")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "warning" not in ran.stderr  # run as it was fitted (another seed is no matter)
    table = json.loads((tmp_path / "t.json").read_text())
    assert (
        table["fitted_with"]["policy"]["model"] == "fake" and "seed" not in table["fitted_with"]["sampling"]
    )
    other = run_cli("run", "--base-url", url, "--prm-url", url, "--prm-model", "fake-prm", "--strategy",
                    "adaptive", "--n", "4", "--policy-table", str(tmp_path / "t.json"), "--problems",
                    str(test_set), "--output", str(tmp_path / "other.jsonl"),
                    "--temperature", "0.3")  # fmt: skip
    assert other.returncode == 0, other.stderr
    assert "was fitted with another sampling, whole; its choices may not hold here" in other.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(row["choice"]["level"] in range(1, 6) for row in rows)
    for row in rows:
        usage, flops = row["usage"], row["flops"]
        policy_tokens = usage["prompt_tokens"] + usage["completion_tokens"] - usage["verifier_tokens"]
        assert flops["policy"] == 2 * 7e9 * policy_tokens
        assert flops["verifier"] == 2 * 1.5e9 * usage["verifier_tokens"] > 0
    missing = run_cli("run", "--base-url", url, "--strategy", "adaptive", "--problems", str(test_set),
                      "--output", str(tmp_path / "o2.jsonl"))  # fmt: skip
    assert missing.returncode == 2 and "--policy-table" in missing.stderr
    assert "Traceback" not in missing.stderr
    for flags, named in [
        (["--budgets", "4,x"], "--budgets"),
        ([], "--prm-url"),  # the grid needs a verifier
        (["--prm-url", url, "--folds", "50"], "--folds"),
        (["--prm-url", url, "--probe-k", "0"], "--probe-k"),
    ]:
        bad = run_cli("fit-adaptive", "--base-url", url, "--problems", str(calibration), "--output",
                      str(tmp_path / "t2.json"), *flags)  # fmt: skip
        assert bad.returncode == 2 and named in bad.stderr, (flags, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1 and not (tmp_path / "t2.json").exists()
    (tmp_path / "broken.json").write_text('{"version": 1}')
    broken = run_cli("run", "--base-url", url, "--prm-url", url, "--strategy", "adaptive", "--policy-table",
                     str(tmp_path / "broken.json"), "--problems", str(test_set), "--output",
                     str(tmp_path / "o3.jsonl"))  # fmt: skip
    assert broken.returncode == 2 and "not a policy table" in broken.stderr
    assert len(broken.stderr.strip().splitlines()) == 1


async def test_the_probe_is_charged_and_apart_from_the_chosen_strategy(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """Whatever the table chose (here MCTS, which would walk into any leaf under the root),
    its tree and candidates hold none of the probe's samples; the probe costs exactly its
    request and its PRM call."""
    table = PolicyTable(bins=DifficultyBins(kind="predicted", cuts=(0.2, 0.4, 0.6, 0.8)), probe_k=3,
                        choices={level: {4: Cell(strategy="mcts", n=4, options={"beam_width": 2})}
                                 for level in range(1, 6)})  # fmt: skip
    policy = make_policy(fake_server())
    (problem,) = problems("s", 1)
    sampling = SamplingParams(seed=4)
    alone = SearchConfig(strategy="mcts", n=4, beam_width=2, sampling=sampling)
    chosen = await search(problem, policy, alone, verifier=prm)
    probing = SearchConfig(strategy="adaptive", n=4, sampling=sampling, policy_table=table)
    adaptive = await search(problem, policy, probing, verifier=prm)
    assert adaptive.tree is not None and chosen.tree is not None
    # The same search as MCTS alone: same seeds, same tree, same answer...
    assert [n.text for n in adaptive.tree.nodes()] == [n.text for n in chosen.tree.nodes()]
    assert adaptive.candidates == chosen.candidates and adaptive.answer == chosen.answer
    # ...plus the probe: one request for its 3 samples and one PRM call.
    assert adaptive.usage.requests == chosen.usage.requests + 2
    assert adaptive.usage.completion_tokens > chosen.usage.completion_tokens


async def test_the_fit_probes_apart_from_the_grid(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """The fit's probe draws other samples than the grid's runs of the same seed (the same
    draws would tie a problem's difficulty to the very answers it is judged on)."""
    policy = make_policy(fake_server())
    chosen = problems("a", 30)
    config = SearchConfig(strategy="majority-vote", n=4, sampling=SamplingParams(seed=7))
    values, failed = await probe_difficulty(chosen, policy, config, k=4, kind="oracle")
    assert not failed and set(values) == {p.id for p in chosen}
    results = await run(chosen, policy, config)
    grid = {r.problem_id: sum(bool(c.answer == r.gold) for c in r.candidates) / 4 for r in results}
    assert sum(values[key] == grid[key] for key in values) < 20  # independent draws mostly differ


async def test_a_budget_too_small_for_the_probe(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """A budget that cannot pay for the probe ends an adaptive search as a budget stop (nothing
    chosen, nothing overrun); in a fit, such problems are left out, and a fit left with too few
    is one error."""
    policy = make_policy(fake_server())
    tight = BudgetLimits(tokens=30)  # less than one whole sample's worst case
    cells = {level: {4: Cell(strategy="majority-vote", n=4)} for level in range(1, 6)}
    bins = DifficultyBins(kind="predicted", cuts=(0.2, 0.4, 0.6, 0.8))
    table = PolicyTable(bins=bins, probe_k=4, choices=cells)
    (problem,) = problems("c", 1)
    config = SearchConfig(strategy="adaptive", n=4, budget=tight, policy_table=table)
    result = await search(problem, policy, config, verifier=prm)
    assert (result.stopped_by, result.answer, result.error, result.choice) == ("budget", None, None, None)
    assert result.usage.total_tokens <= 30
    assert result.tree is not None and len(result.tree) == 1  # no strategy ran
    with pytest.raises(ConfigError, match="only 0 calibration problems could be probed"):
        await fit_policy_table(problems("c", 6), policy, SearchConfig(budget=tight), budgets=[4], grid=GRID,
                               folds=2, verifier=prm)  # fmt: skip


async def test_the_chooser_sits_above_the_engine(
    make_policy: Callable[..., OpenAIPolicy], fake_server: Callable[..., str], prm: PoolingPRM
) -> None:
    """``adaptive`` is chosen above the engine: the engine's own search refuses it in one line,
    before any request, and names the entry that chooses."""
    cells = {level: {4: Cell(strategy="majority-vote", n=4)} for level in range(1, 6)}
    bins = DifficultyBins(kind="predicted", cuts=(0.2, 0.4, 0.6, 0.8))
    table = PolicyTable(bins=bins, probe_k=4, choices=cells)
    (problem,) = problems("c", 1)
    config = SearchConfig(strategy="adaptive", n=4, policy_table=table)
    with pytest.raises(ConfigError, match=r"for each problem: search with treesearch\.search$"):
        await run_strategy(problem, make_policy(fake_server()), config, verifier=prm)
