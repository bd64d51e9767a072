"""The command line as a user runs it: a real process, real files, one-line errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import problems, run_cli, write_problems
from stub_server import listing, stub_server

from treesearch.cli.main import main


def run_args(url: str, problems_file: Path, output: Path, *extra: str) -> list[str]:
    return ["run", "--base-url", url, "--model", "fake", "--problems", str(problems_file),
            "--output", str(output), *extra]  # fmt: skip


def test_run_writes_results_and_events(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 3))
    output, events = tmp_path / "out.jsonl", tmp_path / "events.jsonl"
    done = run_cli(
        *run_args(fake_server(), problems_file, output, "--n", "3", "--sampling", "steps",
                  "--seed", "1", "--step-delimiter", "\\n\\n", "--log-json", str(events))
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["correct"] for r in records] == [True, True, True]
    assert all(r["usage"]["requests"] == 1 + 3 * 3 for r in records)
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    assert sum(e["event"] == "problem_finished" for e in logged) == 3
    assert "accuracy 1.000" in done.stderr


def test_a_bad_problems_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "ok"}\n{"id": 2, "question": \n')
    done = run_cli(*run_args("http://127.0.0.1:9/v1", bad, tmp_path / "o.jsonl"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "bad.jsonl:2: not JSON" in done.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--strategy", "telepathy"], "argument --strategy: invalid choice: 'telepathy'"),
        (["--budget-tokens", "0"], "argument --budget-tokens: must be a positive integer, got '0'"),
        (["--budget-requests", "0"], "argument --budget-requests: must be a positive integer"),
        (["--budget-seconds", "0"], "argument --budget-seconds: must be a positive number, got '0'"),
        (["--strategy", "best-of-n"], "needs a verifier: give one with --prm-url URL (a PRM served by "
         "vLLM) or --verifier KIND (judge, logprob, vllm-pooling or MODULE:FUNCTION)"),
        (["--verifier", "no_such_module:f"], "cannot load verifier"),
        (["--verifier", "oracle"],
         "unknown verifier 'oracle'; choose judge, logprob, vllm-pooling or MODULE:FUNCTION"),
        (["--verifier", "openai"], "unknown verifier 'openai'"),
        (["--score-reduction", "median"], "argument --score-reduction: invalid choice: 'median'"),
        (["--answer-pattern", "(unclosed"], "answer pattern '(unclosed'"),
        (["--answer-timeout", "0"], "argument --answer-timeout: must be a positive number"),
        (["--strategy", "filter-vote", "--n-counts-judgements", "--n", "1"], "at least 2"),
        (["--mcts-c", "-1"], "argument --mcts-c: must be a number ≥ 0, got '-1'"),
        (["--strategy", "lookahead", "--lookahead", "0"], "argument --lookahead: must be a positive integer"),
        (["--beam-width", "0"], "argument --beam-width: must be a positive integer"),
        (["--max-depth", "0"], "argument --max-depth: must be a positive integer"),
        (["--max-tokens", "0"], "argument --max-tokens: must be a positive integer"),
        (["--max-step-tokens", "-3"], "argument --max-step-tokens: must be a positive integer"),
        (["--n", "0"], "argument --n: must be a positive integer"),
        (["--n", "many"], "argument --n: must be a positive integer, got 'many'"),
        (["--temperature", "-1"], "argument --temperature: must be a number from 0 to 5"),
        (["--temperature", "nan"], "argument --temperature: must be a number from 0 to 5"),
        (["--top-p", "0"], "argument --top-p: must be a number in (0, 1]"),
        (["--top-p", "1.5"], "argument --top-p: must be a number in (0, 1]"),
        (["--concurrency", "0"], "argument --concurrency: must be a positive integer"),
        (["--rebase-temperature", "0"], "argument --rebase-temperature: must be a positive number"),
        (["--prm-good-column", "-1"], "argument --prm-good-column: must be an integer ≥ 0"),
        (["--revision-ratio", "0"], "argument --revision-ratio: must be a positive number"),
        (["--revision-context", "0"], "argument --revision-context: must be a positive integer"),
        (["--strategy", "revisions", "--aggregator", "majority", "--revision-template", "{question}"],
         "the revision template needs a {attempts} field"),
        (["--model-params", "seven"], "argument --model-params: must be a positive number of parameters"),
        (["--model-params", "0B"], "argument --model-params: must be a positive number of parameters"),
        (["--prm-params", "1B"], "--prm-params needs --model-params"),
        (["--policy-table", "t.json"], "--policy-table is for --strategy adaptive"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 1))
    done = run_cli(*run_args("http://127.0.0.1:9/v1", problems_file, tmp_path / "o", *extra))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message in done.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": 1, "question": "café"}\n'.encode("latin-1"),
         "p.jsonl:1: not UTF-8 (byte 0xe9 at column 27)"),
        (b'{"id": 1, "question": "a"}\n{"id": 2, "question": "b"}\n{"id": 1, "question": "c"}\n',
         "p.jsonl:3: duplicate id '1' (first on line 1)"),
    ],
)  # fmt: skip
def test_a_bad_problems_file_names_its_lines(tmp_path: Path, content: bytes, message: str) -> None:
    problems_file = tmp_path / "p.jsonl"
    problems_file.write_bytes(content)
    done = run_cli(*run_args("http://127.0.0.1:9/v1", problems_file, tmp_path / "o.jsonl"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message in done.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output", "{tmp}"], "--output {tmp} is a folder; give the path of a file"),
        (["--output", "{tmp}/file/o.jsonl"],
         "--output {tmp}/file/o.jsonl: {tmp}/file is a file, not a folder"),
        (["--log-json", "{tmp}"], "--log-json {tmp} is a folder; give the path of a file"),
        (["--log-json", "{tmp}/file/deeper/e.jsonl"],
         "--log-json {tmp}/file/deeper/e.jsonl: {tmp}/file is a file, not a folder"),
        (["--trees", "{tmp}/file"], "--trees {tmp}/file is a file; --trees names the folder trees go into"),
        (["--trees", "{tmp}/file/trees"], "--trees {tmp}/file/trees: {tmp}/file is a file, not a folder"),
    ],
)  # fmt: skip
def test_paths_that_cannot_be_written_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 1))
    (tmp_path / "file").write_text("in the way\n")
    flags = [arg.format(tmp=tmp_path) for arg in extra]
    done = run_cli(*run_args("http://127.0.0.1:9/v1", problems_file, tmp_path / "o.jsonl"), *flags)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message.format(tmp=tmp_path) in done.stderr


def test_missing_folders_are_made(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 2))
    output, events, trees = tmp_path / "a" / "o.jsonl", tmp_path / "b" / "c" / "e.jsonl", tmp_path / "t"
    done = run_cli(*run_args(fake_server(), problems_file, output, "--n", "2", "--log-json",
                                str(events), "--trees", str(trees)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(output.read_text().splitlines()) == 2
    assert events.read_text()
    assert sorted(path.name for path in trees.iterdir()) == ["sure0.json", "sure1.json"]


def test_a_problem_longer_than_the_context_fails_alone(
    fake_server: Callable[..., str], tmp_path: Path
) -> None:
    sure = problems("sure", 3)
    long = {"id": "long", "question": sure[0].question + " pad" * 9000, "answer": sure[0].answer}
    problems_file = write_problems(tmp_path / "p.jsonl", sure[1:])
    with problems_file.open("a") as handle:
        handle.write(json.dumps(long) + "\n")
    output = tmp_path / "out.jsonl"
    done = run_cli(*run_args(fake_server(), problems_file, output, "--n", "2"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "1 problems failed (--retry-failed runs them again); first: " in done.stderr
    records = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert "maximum context length is 8192 tokens" in records["long"]["error"]
    assert "\n" not in records["long"]["error"]
    assert [records[p.id]["correct"] for p in sure[1:]] == [True, True]


def test_the_only_model_listed_is_the_default(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 2))
    output = tmp_path / "out.jsonl"
    done = run_cli("run", "--base-url", fake_server(), "--problems", str(problems_file),
                      "--output", str(output), "--n", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["correct"] for line in output.read_text().splitlines()] == [True, True]


def test_a_model_the_server_does_not_list_is_refused(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 2))
    url = fake_server()
    done = run_cli(*run_args(url, problems_file, tmp_path / "o.jsonl", "--model", "gemma-3-270m"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"{url} does not serve model 'gemma-3-270m'; it lists fake" in done.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_a_server_with_several_models_needs_model(tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 1))
    with stub_server(listing("qwen", "llama")) as url:
        done = run_cli("run", "--base-url", url, "--problems", str(problems_file),
                          "--output", str(tmp_path / "o.jsonl"))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"--model is required: {url} serves qwen, llama" in done.stderr


def test_a_server_without_models_skips_the_check(tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 1))
    output = tmp_path / "o.jsonl"
    with stub_server(lambda method, path, headers: (404, {"detail": "Not Found"})) as url:
        unnamed = run_cli("run", "--base-url", url, "--problems", str(problems_file),
                             "--output", str(output))  # fmt: skip
        named = run_cli(*run_args(url, problems_file, output, "--n", "1"))
    assert unnamed.returncode == 2
    assert f"--model is required: {url} does not list its models" in unnamed.stderr
    # Past the check: the run goes on, and the server's 404s fail the problem.
    assert named.returncode == 1
    assert "1 problems failed" in named.stderr
    assert "answered 404" in named.stderr


def _options_without_default(help_text: str) -> list[str]:
    """The options whose --help entry states no default (argparse's own -h and --version,
    and the required options, have none to state)."""
    entries: list[str] = []
    for line in help_text.splitlines():
        if line.startswith("  -"):
            entries.append(line)
        elif entries and line.startswith("   "):
            entries[-1] += line
    return [
        entry.split()[0]
        for entry in entries
        if "(default" not in entry and not entry.split()[0].startswith(("-h", "--version"))
    ]


@pytest.mark.parametrize(
    "command", [[], ["run"], ["serve-fake"], ["demo"], ["fit-adaptive"], ["advise"], ["label"]]
)
def test_help_shows_every_default(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    missing = [o for o in _options_without_default(shown) if o not in ("--problems", "--output", "--results")]
    assert missing == []
    assert "``" not in shown


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"treesearch {version('treesearch')}\n"


# Libraries that take a tenth of a second or more to import, each used only by some commands
# or transports: --help must not pay for them (benchmarks/bench_overhead.py times it).
_HEAVY = ("openai", "httpx2", "aiohttp", "networkx", "sympy", "math_verify", "llama_cpp", "matplotlib")


def test_help_imports_no_heavy_library() -> None:
    """In a fresh interpreter (this one has imported everything), as ``treesearch --help``."""
    script = (
        "import sys\nfrom treesearch.cli.main import main\n"
        "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "[]"


def test_a_missing_base_url_is_one_line(tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 1))
    done = run_cli("run", "--problems", str(problems_file), "--output", str(tmp_path / "o"))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "--base-url is required" in done.stderr


def test_an_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 2))
    done = run_cli(*run_args("http://127.0.0.1:9/v1", problems_file, tmp_path / "o.jsonl"))
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "http://127.0.0.1:9/v1 unreachable" in done.stderr


def test_failed_problems_give_a_non_zero_exit(fake_server: Callable[..., str], tmp_path: Path) -> None:
    problems_file = write_problems(tmp_path / "p.jsonl", problems("a", 2))
    done = run_cli(*run_args(fake_server("--max-context", "100"), problems_file, tmp_path / "o"))
    assert done.returncode == 1
    assert "2 problems failed" in done.stderr
    assert "400" in done.stderr


@pytest.mark.parametrize(
    "extra",
    [
        ["--strategy", "weighted-vote", "--prm-url", "URL", "--prm-model", "fake-prm"],
        ["--strategy", "filter-vote", "--verifier", "judge"],
        ["--strategy", "beam", "--prm-url", "URL", "--prm-model", "fake-prm", "--beam-width", "2"],
        ["--strategy", "lookahead", "--verifier", "logprob", "--lookahead", "1", "--beam-width", "2"],
        ["--strategy", "dvts", "--prm-url", "URL", "--prm-model", "fake-prm", "--prm-step-tag",
         "<extra_0>", "--score-reduction", "min"],
        ["--strategy", "rebase", "--prm-url", "URL", "--prm-model", "fake-prm",
         "--rebase-temperature", "0.2", "--aggregator", "majority"],
        ["--strategy", "mcts", "--prm-url", "URL", "--prm-model", "fake-prm", "--mcts-c", "1.4", "--n", "3"],
        ["--strategy", "beam", "--prm-url", "URL", "--prm-model", "fake-prm",
         "--completion-check", "judge"],
    ],
)  # fmt: skip
def test_every_strategy_from_the_command_line(
    fake_server: Callable[..., str], tmp_path: Path, extra: list[str]
) -> None:
    url = fake_server()
    problems_file = write_problems(tmp_path / "p.jsonl", problems("sure", 2))
    output = tmp_path / "out.jsonl"
    args = [url if arg == "URL" else arg for arg in extra]
    done = run_cli(*run_args(url, problems_file, output, "--n", "4", "--seed", "3", *args))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["correct"] for r in records] == [True, True]
    assert all(r["strategy"] == extra[1] for r in records)


def test_serve_fake_on_a_port_in_use_is_one_line(fake_server: Callable[..., str]) -> None:
    port = fake_server().rsplit(":", 1)[1].split("/")[0]
    done = run_cli("serve-fake", "--port", port)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert f"cannot listen on 127.0.0.1:{port}: port {port} is in use" in done.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--error-statuses", "5xx"], "--error-statuses: '5xx' is not an error status"),
        (["--error-statuses", "429,reset"], "--error-statuses: 'reset' is not an error status"),
        (["--fault-kinds", "500,hiccup"], "--fault-kinds: 'hiccup' is neither an error status"),
        (["--error-rate", "2"], "--error-rate must be in [0, 1]"),
        (["--slow-s", "0"], "--slow-s must be positive"),
        (["--write-problems", "."], "--write-problems .: Is a directory"),
        (["--write-problems", "p.jsonl", "--count", "0"], "--count must be positive"),
    ],
)
def test_bad_serve_fake_settings_are_one_line(flags: list[str], message: str) -> None:
    done = run_cli("serve-fake", "--port", "0", *flags)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert message in done.stderr


def test_serve_fake_writes_problems_it_understands(tmp_path: Path) -> None:
    from treesearch.backends.fake.launch import spawn

    problems_file, output = tmp_path / "new" / "fake.jsonl", tmp_path / "out.jsonl"
    done = run_cli("serve-fake", "--write-problems", str(problems_file), "--count", "4")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in problems_file.read_text().splitlines()]
    assert len(records) == 4
    for record in records:
        assert f"[task:{record['id']}]" in record["question"]
        assert record["answer"] in record["fake"]["answers"]
    with spawn(["--problems", str(problems_file)]) as url:
        done = run_cli(*run_args(url, problems_file, output, "--n", "4", "--seed", "1"))
    assert done.returncode == 0, done.stderr
    answers = {r["id"]: r["fake"]["answers"] for r in records}
    results = [json.loads(line) for line in output.read_text().splitlines()]
    # Answers from each problem's own distribution: the server read the problems it was given.
    assert sorted(r["id"] for r in results) == sorted(answers)
    assert all(r["answer"] in answers[r["id"]] for r in results)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_in_order(fake_server: Callable[..., str], tmp_path: Path, stop: int) -> None:
    """Interrupted after a tenth of the problems: the finished rows are on disk, whole, and one
    line says how many problems remain; no traceback. The rerun finishes the rest."""
    chosen = problems("b", 30)
    problems_file = write_problems(tmp_path / "p.jsonl", chosen)
    output = tmp_path / "out.jsonl"
    url = fake_server("--latency", "0.2")
    args = run_args(
        url, problems_file, output, "--sampling", "steps", "--n", "2", "--problems-in-flight", "2"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "treesearch.cli", *args], stderr=subprocess.PIPE, text=True
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    while not line.startswith(("[3/30] ", "[4/30] ", "[5/30] ", "[6/30] ")):  # a tenth done
        assert line, "the run ended before a tenth of its problems"
        line = process.stderr.readline()
    process.send_signal(stop)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    process.stderr.close()
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert 3 <= len(rows) < 30
    assert "Traceback" not in rest
    last = rest.splitlines()[-1]
    assert last.startswith(f"treesearch: interrupted; {30 - len(rows)} of 30 problems remain"), rest
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert sorted(r["id"] for r in map(json.loads, output.read_text().splitlines())) == sorted(
        p.id for p in chosen
    )
