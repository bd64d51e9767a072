"""treesearch view: the page a real run's trees make, driven in Debian's chromium (headless,
through Playwright pointed at the system browser), and the command's edges."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import problems, run_cli, write_problems

from treesearch.cli.main import main
from treesearch.engine.tree import NodeStatus, SearchTree
from treesearch.runs.runner import tree_path
from treesearch.view.page import embed_json, load_run, load_tree, render

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it)"
)
XSS = '</script><img src=x onerror="window.pwned=1"><!-- \u2028 <b>bold</b> & more'


@pytest.fixture(scope="module")
def run_dir(fake_server: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run: beam search with the synthetic PRM over three problems, rows and trees."""
    folder = tmp_path_factory.mktemp("run")
    problems_file = write_problems(folder / "p.jsonl", problems("s", 3))
    url = fake_server()
    done = run_cli("run", "--base-url", url, "--model", "fake", "--problems", str(problems_file),
                   "--output", str(folder / "run.jsonl"), "--trees", str(folder / "trees"),
                   "--strategy", "beam", "--n", "8", "--prm-url", url, "--prm-model", "fake-prm",
                   "--seed", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return folder


def rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "run.jsonl").read_text().splitlines()]


def tree(folder: Path, problem_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "trees" / f"{problem_id}.json").read_text())
    return data


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "a test using the browser is marked needs_chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def open_page(browser: Browser, html: Path) -> tuple[Page, list[str]]:
    """The page loaded and drawn, and what went wrong: console errors, page errors and any
    request but the page's own (it must open offline). The page's Content-Security-Policy
    is bypassed, so text handling alone must keep a step's HTML inert."""
    page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: errors.append(request.url) if request.url != html.as_uri() else None)
    page.goto(html.as_uri())
    page.wait_for_function("() => document.body.dataset.firstDrawMs !== undefined")
    return page, errors


def drawn(page: Page) -> int:
    return int(page.get_attribute("#tree", "data-drawn") or -1)


def set_range(page: Page, selector: str, value: float) -> None:
    page.eval_on_selector(selector, "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", value)
    page.evaluate("() => new Promise(requestAnimationFrame)")  # the redraw it scheduled


def click_node(page: Page, node_id: int) -> None:
    point = page.evaluate("id => treeView.point(id)", node_id)
    page.mouse.click(point["x"], point["y"])


def test_tree_files_carry_their_row_and_chosen_nodes(run_dir: Path) -> None:
    for row in rows(run_dir):
        graph = tree(run_dir, row["id"])["graph"]
        assert graph["result"] == {key: value for key, value in row.items() if key != "config"}
        assert graph["chosen"] == [c["node"] for c in row["candidates"] if c["answer"] == row["answer"]]
        assert graph["chosen"]


@needs_chromium
def test_the_page_of_a_run_draws_every_node_and_answers_clicks(run_dir: Path, browser: Browser) -> None:
    html = run_dir / "view.html"
    assert main(["view", str(run_dir / "run.jsonl"), "-o", str(html)]) == 0
    first, second = rows(run_dir)[:2]
    nodes = tree(run_dir, first["id"])["nodes"]
    page, errors = open_page(browser, html)

    assert drawn(page) == len(nodes)
    assert page.get_attribute("body", "data-problem") == first["id"]
    assert fields(page)["tokens below"] == str(sum(node["tokens"] for node in nodes))  # the root's

    parents = {node["parent"] for node in nodes}
    pruned = next(n["id"] for n in nodes if n["status"] == "open" and n["id"] not in parents)
    click_node(page, pruned)
    assert fields(page)["status"] == "pruned (open leaf)"

    leaf = max(tree(run_dir, first["id"])["graph"]["chosen"])
    click_node(page, leaf)
    assert page.text_content("#node-title") == f"Node {leaf}"
    assert page.text_content("#node-text") == nodes[leaf]["text"]
    path = page.locator("#path-text li").all_text_contents()
    assert len(path) == nodes[leaf]["depth"] and path[-1] == nodes[leaf]["text"]

    set_range(page, "#depth", 1)
    assert drawn(page) == sum(node["depth"] <= 1 for node in nodes)
    set_range(page, "#depth", max(node["depth"] for node in nodes))
    threshold = sorted(node["scores"][-1] for node in nodes if node["scores"])[len(nodes) // 2]
    set_range(page, "#min-score", threshold)
    assert drawn(page) == len(passing(nodes, threshold))
    set_range(page, "#min-score", 0)

    set_range(page, "#replay", 0)
    assert drawn(page) == 1
    page.click("#play")
    page.wait_for_function("n => document.getElementById('tree').dataset.drawn === String(n)", arg=len(nodes))
    assert page.input_value("#replay") == str(len(nodes) - 1)

    page.select_option("#problem", index=1)
    assert page.get_attribute("body", "data-problem") == second["id"]
    assert drawn(page) == len(tree(run_dir, second["id"])["nodes"])
    assert errors == []


def fields(page: Page) -> dict[str, str]:
    """The selected node's fields, by name."""
    names = page.locator("#node-fields dt").all_text_contents()
    return dict(zip(names, page.locator("#node-fields dd").all_text_contents(), strict=True))


def passing(nodes: list[dict[str, Any]], threshold: float) -> set[int]:
    """The nodes a minimum score shows: scored at least it (or unscored), and their parent shown."""
    shown: set[int] = set()
    for node in sorted(nodes, key=lambda node: node["id"]):
        score_ok = not node["scores"] or node["scores"][-1] >= threshold
        if score_ok and (node["parent"] is None or node["parent"] in shown):
            shown.add(node["id"])
    return shown


@needs_chromium
def test_a_step_holding_html_stays_text(run_dir: Path, browser: Browser, tmp_path: Path) -> None:
    data = tree(run_dir, rows(run_dir)[0]["id"])
    data["nodes"][1]["text"] = XSS
    data["nodes"][0]["text"] = XSS
    (tmp_path / "tree.json").write_text(json.dumps(data))
    assert main(["view", str(tmp_path / "tree.json")]) == 0
    html = (tmp_path / "tree.html").read_text()
    assert "</script><img" not in html and "<!-- " not in html
    page, errors = open_page(browser, tmp_path / "tree.html")
    assert page.text_content("#node-text") == XSS  # the root, shown first
    click_node(page, 1)
    assert page.text_content("#node-text") == XSS
    assert page.evaluate("window.pwned") is None
    assert page.locator("img, b").count() == 0
    assert errors == []


@needs_chromium
def test_a_reasoning_models_thinking_is_shown_apart_from_its_reply(browser: Browser, tmp_path: Path) -> None:
    data = small_tree()
    thinking = "Maybe 2. Wait, \\boxed{2} is wrong."
    data["nodes"][2] |= {"thinking": thinking, "reasoning_tokens": 9, "requests": 3}
    write_json(tmp_path / "tree.json", data)
    assert main(["view", str(tmp_path / "tree.json")]) == 0
    page, errors = open_page(browser, tmp_path / "tree.html")
    assert page.locator("#thinking").is_hidden()  # the root did not think
    click_node(page, 2)
    assert page.text_content("#node-thinking") == thinking
    assert page.text_content("#node-text") == "b"
    assert fields(page)["reasoning tokens"] == "9" and fields(page)["requests"] == "3"
    click_node(page, 1)
    assert page.locator("#thinking").is_hidden() and "reasoning tokens" not in fields(page)
    assert errors == []


@needs_chromium
def test_a_tree_of_5000_nodes_is_drawn_whole(browser: Browser, tmp_path: Path) -> None:
    rng = random.Random(7)
    big = SearchTree("big", "A wide and deep search.")
    for _ in range(4999):
        parent = rng.randrange(len(big))
        if big.node(parent).terminal:
            parent = 0
        status = rng.choice([NodeStatus.OPEN, NodeStatus.OPEN, NodeStatus.ANSWERED, NodeStatus.DEAD_END])
        answer = str(rng.randrange(5)) if status is NodeStatus.ANSWERED else None
        big.add_child(parent, text=f"step {len(big)}", status=status, tokens=rng.randrange(1, 60),
                      scores=(rng.random(),), answer=answer)  # fmt: skip
    big.write_json(tmp_path / "big.json")
    assert main(["view", str(tmp_path / "big.json")]) == 0
    page, errors = open_page(browser, tmp_path / "big.html")
    assert drawn(page) == 5000
    assert errors == []


def test_embedded_json_reads_back_and_cannot_close_the_script() -> None:
    value = {"text": XSS, "list": ["\u2029", "a&b", "x > y"]}
    text = embed_json(value)
    assert json.loads(text) == value
    assert not {"<", ">", "&", "\u2028", "\u2029"} & set(text)


def test_missing_trees_are_one_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    view = ["view", str(run_dir / "run.jsonl"), "-o", str(tmp_path / "v.html"), "--trees"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*view, str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no trees for {run_dir / 'run.jsonl'}'s problems in {empty}" in err

    some = tmp_path / "some"
    some.mkdir()
    first = rows(run_dir)[0]["id"]
    shutil.copy(run_dir / "trees" / f"{first}.json", some)
    assert main([*view, str(some)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("treesearch view: 2 of 3 problems have no tree") and len(lines) == 2
    assert (tmp_path / "v.html").exists()


def test_a_run_cut_short_is_shown_without_its_unfinished_line(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A crash leaves a cut last line, which the run skips when it resumes: so does the view,
    saying so in one line; a bad line before the last is still refused."""
    cut = tmp_path / "run.jsonl"
    cut.write_text((run_dir / "run.jsonl").read_text() + '{"id": "s9", "strategy": "be')
    assert main(["view", str(cut), "-o", str(tmp_path / "v.html"), "--trees", str(run_dir / "trees")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"treesearch view: warning: {cut}:4: skipped an unfinished last line (a run cut short)"
    middle = tmp_path / "middle.jsonl"
    middle.write_text('{"id": "s9", "strategy": "be\n' + (run_dir / "run.jsonl").read_text())
    assert main(["view", str(middle), "-o", str(tmp_path / "w.html"), "--trees", str(run_dir / "trees")]) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ('{"nodes": [{"id": 0}], "edges": []}', "not a search tree"),
        ('{"nodes": [{"id": 1, "parent": null, "depth": 0}], "edges": []}', "breaks the order"),
        (
            '{"nodes": [{"id": 0, "parent": 0, "depth": 0}, {"id": 1, "parent": 0, "depth": 1}]}',
            "node 0 breaks",
        ),
        (
            '{"nodes": [{"id": 0, "parent": 2, "depth": 0}, {"id": 1, "parent": 0, "depth": 1},'
            ' {"id": 2, "parent": 0, "depth": 1}]}',
            "node 0 breaks",
        ),
        (
            '{"nodes": [{"id": 0, "parent": null, "depth": 0}, {"id": 1, "parent": 0, "depth": 1},'
            ' {"id": 1, "parent": 0, "depth": 1}]}',
            "node 1 breaks",
        ),
        (
            '{"nodes": [{"id": 0, "parent": null, "depth": 0}, {"id": 1, "parent": 0, "depth": 0}]}',
            "node 1 breaks",
        ),
        ('{"graph": [1], "nodes": [{"id": 0, "parent": null, "depth": 0}]}', "not a search tree"),
        ('{"nodes": [], "edges": []}', "a search tree without nodes"),
        ("hello\n", "not JSON"),
        ("", "holds no rows"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    source = tmp_path / "in.json"
    if content is not None:
        source.write_text(content)
    assert main(["view", str(source)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def small_tree(**graph: Any) -> dict[str, Any]:
    """A root and two steps, the second answered, with ``graph`` as its attributes."""
    nodes = [
        {"id": 0, "parent": None, "depth": 0, "text": "Q", "scores": []},
        {"id": 1, "parent": 0, "depth": 1, "text": "a", "scores": [0.5], "position": "0/0"},
        {"id": 2, "parent": 0, "depth": 1, "text": "b", "scores": [0.7], "status": "answered",
         "answer": "1", "position": "0/1"},
    ]  # fmt: skip
    return {"graph": {"problem_id": "p", **graph}, "nodes": nodes, "edges": []}


@pytest.mark.parametrize(
    ("graph", "chosen", "note"),
    [
        ({"chosen": [99, -1, 2]}, [2], "chosen ids that are no node of the tree left out: 99, -1"),
        ({"chosen": ["x", None, True]}, [], 'left out: "x", null, true'),
        ({"chosen": 2}, [2], None),
        ({"result": [1, 2], "chosen": [2]}, [2], "the tree's result is not a row: left out"),
        (
            {"result": {"answer": "1", "candidates": [{"answer": "1"}, {"node": 2, "answer": "1"}]}},
            [2],
            "null",
        ),
        ({"result": {"answer": "1", "candidates": "none"}}, [], None),
    ],
)
def test_a_tree_with_bad_attributes_is_shown_without_them(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    graph: dict[str, Any],
    chosen: list[int],
    note: str | None,
) -> None:
    source = tmp_path / "t.json"
    source.write_text(json.dumps(small_tree(**graph)))
    problem = load_tree(source)
    assert problem.chosen == chosen
    assert (problem.note is None) if note is None else (note in (problem.note or "")), problem.note
    assert main(["view", str(source)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == (1 if note is None else 2) and (note is None or note in err[0])


def test_nan_and_infinity_show_as_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = small_tree()
    data["nodes"][1]["scores"] = [float("nan")]
    data["nodes"][2]["confidences"] = [float("-inf"), 0.5]
    data["nodes"][2]["scores"] = ["HUGE"]
    source = tmp_path / "t.json"
    source.write_text(json.dumps(data).replace('"HUGE"', "1e999"))  # NaN and -Infinity as Python writes them
    problem = load_tree(source)
    assert (problem.nodes[1]["score"], problem.nodes[1]["scores"]) == (None, [None])
    assert (problem.nodes[2]["score"], problem.nodes[2]["confidence"]) == (None, 0.5)
    assert problem.note == "3 NaN or infinite numbers in the tree shown as missing"
    render([problem], "t")  # JSON without NaN: it raised ValueError

    row = {"id": "p", "answer": "1", "wall_s": float("nan"), "usage": {"requests": float("-inf")}}
    (tmp_path / "run.jsonl").write_text(json.dumps(row) + "\n")
    (tmp_path / "trees").mkdir()
    (tmp_path / "trees" / "p.json").write_text(json.dumps(small_tree()))
    assert main(["view", str(tmp_path / "run.jsonl")]) == 0
    assert "shown as missing in: requests, wall_s" in capsys.readouterr().err
    (loaded,), _ = load_run(tmp_path / "run.jsonl")
    assert loaded.row is not None
    assert (loaded.row["wall_s"], loaded.row["usage"]) == (None, {"requests": None})


def test_ids_of_one_safe_name_keep_their_own_trees(
    fake_server: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ids "a/b" and "a_b" both made a_b.json once, and the viewer showed one tree twice."""
    assert tree_path(tmp_path, "a_b") == tmp_path / "a_b.json"  # a safe id's name is unchanged
    assert tree_path(tmp_path, "a/b") != tree_path(tmp_path, "a_b")
    chosen = [dataclasses.replace(p, id=i) for p, i in zip(problems("s", 2), ["a/b", "a_b"], strict=True)]
    done = run_cli("run", "--base-url", fake_server(), "--model", "fake", "--problems",
                   str(write_problems(tmp_path / "p.jsonl", chosen)), "--output", str(tmp_path / "run.jsonl"),
                   "--trees", str(tmp_path / "trees"), "--strategy", "majority-vote", "--n", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    found, missing = load_run(tmp_path / "run.jsonl")  # rows in the order the problems finished
    by_id = {p.id: p for p in found}
    assert missing == [] and sorted(by_id) == ["a/b", "a_b"]
    assert [by_id[p.id].nodes[0]["text"] for p in chosen] == [p.question for p in chosen]

    # A tree written before names had a hash is found by its old name, if it is the problem's.
    tree_path(tmp_path / "trees", "a/b").rename(tmp_path / "trees" / "a_b.json")
    found, missing = load_run(tmp_path / "run.jsonl")
    by_id = {p.id: p for p in found}
    assert sorted(by_id) == ["a/b", "a_b"] and missing == ["a_b"]
    assert by_id["a_b"].note == f"the tree at {tmp_path / 'trees' / 'a_b.json'} is problem a/b's"
    assert by_id["a/b"].nodes[0]["text"] == chosen[0].question


@needs_chromium
def test_the_page_survives_what_the_command_refuses(browser: Browser, tmp_path: Path) -> None:
    """The command refuses a root with a parent and drops chosen ids that are no nodes; the
    page, given them anyway, must neither loop for ever following parents nor throw."""
    problems_ = []
    for root_parent in (0, 2):
        problem = load_tree(write_json(tmp_path / "t.json", small_tree()))
        problem.nodes[0]["parent"] = root_parent
        problems_.append(dataclasses.replace(problem, id=str(root_parent), chosen=[99, -1, 2]))
    (tmp_path / "page.html").write_text(render(problems_, "bad"))
    page, errors = open_page(browser, tmp_path / "page.html")
    assert drawn(page) == 3
    click_node(page, 2)
    assert page.locator("#path-text li").all_text_contents() == ["b"]
    page.select_option("#problem", index=1)
    assert drawn(page) == 3
    assert errors == []


@needs_chromium
def test_a_tree_of_200000_nodes_loads(browser: Browser, tmp_path: Path) -> None:
    """Math.min(...scores) overflowed the call stack past some 120,000 values."""
    nodes: list[dict[str, Any]] = [{"id": 0, "parent": None, "depth": 0, "text": "Q"}]
    nodes += [{"id": i, "parent": 0, "depth": 1, "scores": [i / 200_000]} for i in range(1, 200_000)]
    write_json(tmp_path / "big.json", {"graph": {"problem_id": "big"}, "nodes": nodes, "edges": []})
    assert main(["view", str(tmp_path / "big.json")]) == 0
    page, errors = open_page(browser, tmp_path / "big.html")
    assert drawn(page) == 200_000
    assert errors == []


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path
