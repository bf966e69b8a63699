"""Every Python code block of the documentation runs: README.md and docs/**/*.md.

The blocks of one file run in order in one namespace (as a reader types them into one session),
in a temporary working folder holding a copy of the repository's ``experiments/`` configs, with
the graph, spectra and data caches in a temporary folder shared by the pages. A failure names the file and the line of the
markdown where the failing statement is.

A block too long for the test suite (a paper-scale run) is skipped only when its first line says
so, visibly, to readers as well: ``# not run by the test suite: <why>``. The skipped blocks are
counted and listed at the end of the test session, with the number of blocks run and the time.

Why a runner of our own: pytest-markdown-docs runs each block alone unless every block carries a
``continuation`` marker (the files of other authors would all need edits), and mktestdocs has no
skip marker nor per-block report. Blocks are found by markdown-it-py, a CommonMark parser (the
one rich uses), so indented fences, fences in lists and longer fences are read as GitHub reads them.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
import traceback
from pathlib import Path

import pytest

markdown_it = pytest.importorskip("markdown_it")

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: The visible marker of a block the test suite does not run: the block's first line.
SKIP = re.compile(r"^\s*#\s*not run by the test suite\s*:?\s*(?P<why>.*)$", re.IGNORECASE)
PYTHON = {"python", "py", "python3"}

_REPORT: dict[str, dict] = {}


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(first line of the code, 1-based, in the markdown file; code)`` of each Python fence."""
    md = markdown_it.MarkdownIt("commonmark")
    blocks = []
    for token in md.parse(path.read_text(encoding="utf-8")):
        if token.type == "fence" and token.info.strip().split(" ")[0].lower() in PYTHON:
            blocks.append((token.map[0] + 2, token.content))   # map[0]: the fence line, 0-based
    return blocks


def _skip_reason(code: str) -> str | None:
    first = next((line for line in code.splitlines() if line.strip()), "")
    m = SKIP.match(first)
    return (m.group("why").strip() or "no reason given") if m else None


def _nothing():
    return contextlib.nullcontext()


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    """At the end: blocks run and skipped, per file, and the time (printed past pytest's capture)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not _REPORT:
        return
    run = sum(r["run"] for r in _REPORT.values())
    with_blocks = sum(1 for r in _REPORT.values() if r["run"] or r["skipped"] or r.get("failed"))
    skipped = [s for r in _REPORT.values() for s in r["skipped"]]
    seconds = sum(r["seconds"] for r in _REPORT.values())
    cpu = sum(r["cpu"] for r in _REPORT.values())
    lines = [f"docs: {run} Python blocks run in {with_blocks} files in {seconds:.0f} s ({cpu:.0f} s of CPU); "
             f"{len(skipped)} skipped "
             "(marked '# not run by the test suite')" + (":" if skipped else "")]
    lines += [f"  skipped {where}" for where in skipped]
    lines += [f"  {name}: {r['run']} run, {len(r['skipped'])} skipped, {r['seconds']:.1f} s ({r['cpu']:.1f} s CPU)"
              + (f"; FAILED at the block of line {r['failed'].split(':')[1]}" if r.get("failed") else "")
              for name, r in _REPORT.items() if r["run"] or r["skipped"] or r.get("failed")]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else _nothing():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache of graphs, spectra and maps for all the pages (what a reader's cache would hold
    after reading them in turn): the pages' blocks do not pay twice for the same spectra."""
    return tmp_path_factory.mktemp("docs_cache")


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_python_blocks_run(path, tmp_path, monkeypatch, cache):
    blocks = python_blocks(path)
    rel = path.relative_to(ROOT)
    record = _REPORT.setdefault(str(rel), {"run": 0, "skipped": [], "seconds": 0.0, "cpu": 0.0})
    if not blocks:
        return
    # The blocks see the repository's configs by their documented relative paths, and write nowhere
    # but here; the caches (graphs, spectra, maps) start empty for the session, not in the user's home,
    # except the real data sets (Debian packages), which stay where the reader fetched them.
    shutil.copytree(ROOT / "experiments", tmp_path / "experiments")
    monkeypatch.chdir(tmp_path)
    from graphsphere.data.sources import data_dir

    # real data sets fetched from Debian packages stay where the reader fetched them
    monkeypatch.setenv("GRAPHSPHERE_DATA", str(data_dir()))
    monkeypatch.setenv("GRAPHSPHERE_CACHE", str(cache))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs.{rel.stem}"}
    start, cpu = time.perf_counter(), time.process_time()
    try:
        for line, code in blocks:
            why = _skip_reason(code)
            failure = None
            try:
                # Padding puts each statement at its line of the markdown file in tracebacks; a skipped
                # block is still compiled, so that at least its syntax cannot rot.
                compiled = compile("\n" * (line - 1) + code, str(rel), "exec")
                if why is not None:
                    record["skipped"].append(f"{rel}:{line - 1} ({why})")
                    continue
                exec(compiled, namespace)
            except Exception as e:  # noqa: BLE001 (any error of a block fails the test, with its place)
                frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(rel)]
                at = f"{rel}:{frames[-1].lineno}" if frames else f"{rel}, block at line {line - 1}"
                failure = f"{at}: {type(e).__name__}: {e}\n\n{traceback.format_exc(limit=-6)}"
            if failure:
                record["failed"] = f"{rel}:{line - 1}"
                pytest.fail(failure, pytrace=False)
            record["run"] += 1
    finally:
        record["seconds"] += time.perf_counter() - start
        record["cpu"] += time.process_time() - cpu
        import matplotlib.pyplot as plt

        plt.close("all")


def test_the_runner_finds_blocks_and_markers(tmp_path):
    """The runner itself: fences in lists and with longer backtick runs are found, other languages
    are not, and the skip marker is the block's first line only."""
    md = tmp_path / "x.md"
    md.write_text("# t\n\n```python\na = 1\n```\n\n- item\n\n  ````py\n  b = a + 1\n  ````\n\n"
                  "```bash\nexit 1\n```\n\n```python\n# Not run by the test suite: hours on a GPU\nraise SystemExit\n```\n"
                  "\n```python\nx = 1  # not run by the test suite: only a comment here\n```\n")
    blocks = python_blocks(md)
    assert [(line, code.strip().splitlines()[0]) for line, code in blocks] == [
        (4, "a = 1"), (10, "b = a + 1"), (18, "# Not run by the test suite: hours on a GPU"),
        (23, "x = 1  # not run by the test suite: only a comment here")]
    assert [_skip_reason(code) for _, code in blocks] == [None, None, "hours on a GPU", None]
