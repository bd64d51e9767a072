"""treesearch view: the page a real run's trees make, driven in Debian's chromium (headless,
through Playwright pointed at the system browser), and the command's edges."""

from __future__ import annotations

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
from treesearch.view.page import embed_json

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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ('{"nodes": [{"id": 0}], "edges": []}', "not a search tree"),
        ('{"nodes": [{"id": 1, "parent": null, "depth": 0}], "edges": []}', "breaks the order"),
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
