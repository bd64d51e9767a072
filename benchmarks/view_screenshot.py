"""The viewer's screenshot for the docs, and what a tree of about 5,000 nodes costs it.

    python benchmarks/view_screenshot.py

Runs seeded beam searches on the synthetic server (its PRM scoring the steps, steps that
err, paths that may answer early) with ``treesearch run --trees``, makes their pages with
``treesearch view`` and opens them in Debian's chromium (headless, through Playwright):

- six problems at N = 16, one chosen leaf clicked: the screenshot
  benchmarks/results/view.png;
- one problem at N = 1024 (about 5,000 nodes): the time from navigation to the first
  drawn frame (median of 5 loads), the script time of one whole redraw (median of 20,
  after 5 to warm up) and the page's size, in benchmarks/results/view.json.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

from treesearch.backends.fake.launch import spawn
from treesearch.backends.fake.tasks import make_problems

RESULTS = Path(__file__).parent / "results"
CHROMIUM = "/usr/bin/chromium"


def treesearch(*args: str) -> None:
    print("treesearch", *args, file=sys.stderr)
    subprocess.run([sys.executable, "-m", "treesearch.cli", *args], check=True)


def search(url: str, folder: Path, problems: list[dict[str, Any]], n: int) -> Path:
    """Rows and trees of a seeded beam search; the page ``treesearch view`` makes of them."""
    problems_file = folder / "problems.jsonl"
    problems_file.write_text("".join(json.dumps(record) + "\n" for record in problems))
    treesearch("run", "--base-url", url, "--model", "fake", "--problems", str(problems_file),
               "--output", str(folder / "run.jsonl"), "--trees", str(folder / "trees"),
               "--strategy", "beam", "--n", str(n), "--beam-width", "4", "--seed", "1",
               "--prm-url", url, "--prm-model", "fake-prm")  # fmt: skip
    treesearch("view", str(folder / "run.jsonl"), "-o", str(folder / "view.html"))
    return folder / "view.html"


def open_page(page: Page, html: Path) -> float:
    """Load the page; the milliseconds from navigation to its first drawn frame."""
    page.goto(html.as_uri())
    page.wait_for_function("() => document.body.dataset.firstDrawMs !== undefined")
    return float(page.get_attribute("body", "data-first-draw-ms") or "nan")


def main() -> None:
    small = make_problems(6, p_correct=0.4, wrong=2, steps=4, step_error=0.15, early=0.1, prefix="v")
    big = make_problems(1, p_correct=0.4, wrong=2, steps=5, step_error=0.1, prefix="big")
    with tempfile.TemporaryDirectory() as scratch, sync_playwright() as playwright:
        root = Path(scratch)
        with spawn(["--prm-noise", "1.0", "--seed", "1"], small + big, root) as url:
            (root / "small").mkdir()
            (root / "big").mkdir()
            small_page = search(url, root / "small", small, 16)
            big_page = search(url, root / "big", big, 1024)
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 760})
        open_page(page, small_page)
        page.select_option("#problem", index=1)
        leaf = max(json.loads((root / "small" / "trees" / "v1.json").read_text())["graph"]["chosen"])
        point = page.evaluate("id => treeView.point(id)", leaf)
        page.mouse.click(point["x"], point["y"])
        RESULTS.mkdir(exist_ok=True)
        page.screenshot(path=str(RESULTS / "view.png"))

        first_draws = []
        for _ in range(5):
            page = browser.new_page(viewport={"width": 1400, "height": 760})
            first_draws.append(open_page(page, big_page))
            page.close()
        page = browser.new_page(viewport={"width": 1400, "height": 760})
        open_page(page, big_page)
        nodes = int(page.get_attribute("#tree", "data-drawn") or 0)
        redraws = [page.evaluate("() => treeView.redraw()") for _ in range(25)][5:]  # after 5 to warm up
        version = browser.version
        browser.close()
        summary = {
            "nodes": nodes,
            "page_mb": round(big_page.stat().st_size / 1e6, 2),
            "first_draw_ms_median_of_5": round(statistics.median(first_draws), 1),
            "redraw_ms_median_of_20": round(statistics.median(redraws), 2),
            "browser": f"chromium {version}",
        }
    (RESULTS / "view.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
