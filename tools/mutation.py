"""Mutation testing of graphsphere, one module at a time, cached (mutmut 3).

    .venv/bin/python tools/mutation.py graph            # one module
    .venv/bin/python tools/mutation.py graph spectral   # several
    .venv/bin/python tools/mutation.py --all            # every module of MODULES, in order
    .venv/bin/python tools/mutation.py --list           # the modules, their files and tests
    .venv/bin/python tools/mutation.py --survivors graph   # survivors with their diffs, ready to judge
    .venv/bin/python tools/mutation.py --report         # rewrite the table from the cache only

Each module runs in its own workspace, ``mutants/<module>/`` (git-ignored), so that its mutmut cache
(``mutants/<module>/mutants/``: the mutated copy of the package and every verdict) survives the
other modules' runs: mutmut resets all verdicts when its test selection changes, and each module has
its own. A later run only tests the mutants of functions whose source changed (mutmut's per-function
hashes) plus, when the module's test files changed since the last run, the mutants that survived it.
``--fresh`` deletes a module's workspace first.

The per-module tests are chosen to run in minutes on 2 busy cores: the module's own test files and
its doctests. mutmut itself runs each mutant against only the selected tests that call the mutated
function (recorded in a first, "stats" run).

Survivors judged equivalent (no observable change of behaviour) are listed in
tools/mutation_equivalent.txt, one per line: the mutant's name, the fingerprint of its change and
a one-line reason. They are matched by fingerprint (function and changed lines), so renumbering the
mutants after an edit keeps the judgement; an entry that matches nothing is reported as stale.

The score is the share of the non-equivalent mutants detected: (killed + timeout) / (mutants -
equivalent). Mutants that no selected test reaches ("no tests") count as not detected. Results go to
benchmarks/results/mutation.md (the table) and benchmarks/results/mutation.json (the same figures
and the measured times, so that a run of one module keeps the others' rows).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKSPACES = ROOT / "mutants"
EQUIVALENT_FILE = ROOT / "tools" / "mutation_equivalent.txt"
RESULTS_MD = ROOT / "benchmarks" / "results" / "mutation.md"
RESULTS_JSON = ROOT / "benchmarks" / "results" / "mutation.json"
#: What a workspace links to in the checkout (mutmut copies from there into its mutants/ folder).
LINKED = ("graphsphere", "tests", "pyproject.toml")


@dataclass(frozen=True)
class Module:
    """One unit of mutation testing: the files mutated and the tests run against them."""

    name: str
    mutate: tuple[str, ...]  # glob patterns (fnmatch, relative to the checkout)
    tests: tuple[str, ...]  # pytest arguments: test files, node ids, doctest modules
    layer: str = "core"  # "core" or "experiments" (the two targets of issue 18)
    note: str = ""
    exclude: tuple[str, ...] = field(default=())


# Order: the priority of issue 18 (the numerical core first).
MODULES: dict[str, Module] = {m.name: m for m in (
    Module("graph", ("graphsphere/graph.py", "graphsphere/neighbours.py"),
           ("tests/test_graph.py", "tests/test_graph_mutants.py", "graphsphere/graph.py", "graphsphere/neighbours.py")),
    Module("spectral", ("graphsphere/spectral/*.py",),
           # the CLI test (15 s, pictures) adds nothing the function tests do not check
           ("tests/test_spectral.py", "--deselect", "tests/test_spectral.py::test_cli_writes_pngs",
            "tests/test_spectral_mutants.py", "graphsphere/spectral")),
    Module("sampling", ("graphsphere/sampling/*.py",),
           ("tests/test_sampling_healpix.py", "tests/test_sampling_grids.py", "tests/test_clustering.py",
            "tests/test_sampling_mutants.py", "graphsphere/sampling")),
    Module("kernel_widths", ("graphsphere/kernel_widths.py",),
           ("tests/test_kernel_widths.py", "graphsphere/kernel_widths.py")),
    # graphsphere/nn/functional/ is left out: its kernels are C source in Python strings, which mutmut would
    # mutate into compile errors; tests/test_cheb_kernel.py checks them against gradcheck and dense references.
    Module("nn", ("graphsphere/nn/__init__.py", "graphsphere/nn/conv.py", "graphsphere/nn/norm.py",
                  "graphsphere/nn/operator.py", "graphsphere/nn/pool.py"),
           ("tests/test_pool.py", "tests/test_conv.py", "tests/test_nn_mutants.py",
            "tests/test_cheb_kernel.py::test_vertex_batch_norm_is_batchnorm1d_then_relu",
            "tests/test_train.py::test_sync_batchnorm_keeps_the_vertex_layout",
            "graphsphere/nn/conv.py", "graphsphere/nn/norm.py", "graphsphere/nn/operator.py", "graphsphere/nn/pool.py"),
           note="graphsphere/nn/functional/ excluded (C kernels, checked by gradcheck and dense references)"),
    Module("models", ("graphsphere/models/*.py",),
           ("tests/test_models.py", "tests/test_patches.py", "tests/test_triplet_loss.py", "graphsphere/models")),
    # Lightning fits are what a train mutant costs (each mutant reruns the tests that reach it, fits and all, on 2
    # busy cores), so the selection leaves out the tests whose fits only repeat what others check:
    # test_cosmology_hook (pyccl maps: the data layer's builder), test_command_line (the CLI's),
    # test_same_seed_same_result_and_other_seed_differs, test_regression_and_segmentation, test_bf16_mixed_on_cpu
    # and test_early_stopping (tests/test_train_mutants.py checks seeds, segmentation and regression fits and the
    # trainer's callbacks with fewer fits); test_train_resume.py and test_train_ddp.py (6 s, 11 s, in subprocesses).
    Module("train", ("graphsphere/train/*.py",),
           ("tests/test_train.py", "tests/test_train_config.py", "tests/test_train_metrics.py",
            "tests/test_train_data.py", "tests/test_train_mutants.py", "graphsphere/train",
            *(arg for test in ("test_train_data.py::test_cosmology_hook", "test_train.py::test_command_line",
                               "test_train.py::test_same_seed_same_result_and_other_seed_differs",
                               "test_train.py::test_regression_and_segmentation",
                               "test_train.py::test_bf16_mixed_on_cpu", "test_train.py::test_early_stopping")
              for arg in ("--deselect", f"tests/{test}")))),
    Module("cosmology_scoring", ("graphsphere/experiments/cosmology/baselines.py",),
           ("tests/test_cosmology_baselines.py", "tests/test_cosmology_baselines_mutants.py",
            "graphsphere/experiments/cosmology/baselines.py"),
           layer="experiments"),
    Module("shapes_scoring", ("graphsphere/experiments/shapes/retrieval.py",),
           ("tests/test_retrieval.py", "graphsphere/experiments/shapes/retrieval.py"),
           layer="experiments"),
    Module("stations_scoring", ("graphsphere/experiments/stations/baselines.py",),
           ("tests/test_experiment_stations.py", "graphsphere/experiments/stations/baselines.py"),
           layer="experiments"),
)}

#: mutmut's exit-code verdicts, grouped into the table's columns.
DETECTED = {"killed", "timeout", "segfault"}


# ---- the worker: runs inside a module's workspace, in its own process ---------------------------

def _worker(module: Module, max_children: int, retest: list[str]) -> None:
    """Configure mutmut for one module and run it (cwd: the module's workspace)."""
    import mutmut.__main__ as mutmut_main  # noqa: F401 (sets the fork start method mutmut needs)
    from mutmut import configuration

    cfg = configuration.config()
    cfg.only_mutate = list(module.mutate)
    cfg.do_not_mutate = list(cfg.do_not_mutate) + list(module.exclude)
    cfg.pytest_add_cli_args_test_selection = list(module.tests)
    # a stats run over the module's tests first (no names: every mutant not yet judged)
    try:
        mutmut_main._run((), max_children)
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    _write_survivors()
    if _interrupted():
        raise SystemExit("interrupted: the verdicts so far are kept, run the module again to go on")
    if retest:
        print(f"    re-testing {len(retest)} survivor(s): the module's tests changed since they survived", flush=True)
        try:
            mutmut_main._run(tuple(retest), max_children)
        except SystemExit as stop:
            if stop.code not in (0, None):
                raise
    _write_survivors()


def _interrupted() -> bool:
    data = json.loads(Path("survivors.json").read_text())
    return "not checked" in data["verdicts"].values()


def _write_survivors() -> None:
    """Keep every undetected mutant's diff in survivors.json (read by the parent and --survivors)."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code
    from mutmut.utils.file_utils import walk_mutatable_files

    verdicts: dict[str, str] = {}
    diffs: dict[str, str] = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        for name, code in data.exit_code_by_key.items():
            status = status_by_exit_code[code]
            verdicts[name] = status
            if status not in DETECTED and status != "not checked":
                diffs[name] = get_diff_for_mutant(name, path=path)
    _atomic_write(Path("survivors.json"), json.dumps({"verdicts": verdicts, "diffs": diffs}, indent=1))


# ---- the parent: workspaces, equivalents, the table ---------------------------------------------

def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _workspace(module: Module, fresh: bool) -> Path:
    ws = WORKSPACES / module.name
    if fresh and ws.exists():
        shutil.rmtree(ws)
    ws.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        link = ws / name
        if not link.is_symlink() and (ROOT / name).exists():
            link.symlink_to(Path("..", "..", name))
    return ws


def _tests_fingerprint(module: Module) -> str:
    """Content hash of the module's test files (and conftest): a change asks to re-test survivors."""
    files = {ROOT / "tests" / "conftest.py"}
    for arg in module.tests:
        path = ROOT / arg.split("::")[0]
        if path.is_file() and path.name.startswith("test_"):
            files.add(path)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(name: str, diff: str) -> str:
    """A mutant's identity that survives renumbering: its function and its changed lines."""
    function = name.partition("__mutmut_")[0]
    changed = [line[0] + " ".join(line[1:].split()) for line in diff.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return hashlib.sha256("\n".join([function, *changed]).encode()).hexdigest()[:12]


def _changed_lines(diff: str) -> tuple[list[str], list[str]]:
    lines = [line for line in diff.splitlines() if not line.startswith(("+++", "---"))]
    return [line[1:] for line in lines if line[:1] == "-"], [line[1:] for line in lines if line[:1] == "+"]


def _message_statements(path: Path) -> set[int]:
    """Line numbers of the statements of a source file that raise or warn (their whole extent)."""
    import ast

    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        call = node.value if isinstance(node, ast.Expr) else None
        warns = (isinstance(call, ast.Call) and isinstance(call.func, (ast.Attribute, ast.Name))
                 and getattr(call.func, "attr", getattr(call.func, "id", "")) == "warn")
        if isinstance(node, ast.Raise) or warns:
            lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


def _without_stacklevel(line: str) -> str:
    return re.sub(r",\s*\)", ")", re.sub(r"stacklevel=[^,)]*", "", line))


def is_cosmetic(diff: str, source: Path) -> bool:
    """Only the text of an error or warning message changed (mutmut's XX...XX wrapping or a change of case
    of a string inside a ``raise`` or ``warn(...)`` statement), or the ``stacklevel`` of a warning (the
    line it points at: not measurable under mutmut, whose trampolines add call frames). Not a bug a user
    could hit. A message lost altogether (``None``) is not cosmetic."""
    minus, plus = _changed_lines(diff)
    if len(minus) != 1 or len(plus) != 1 or minus[0] == plus[0] or not source.exists():
        return False
    text_only = minus[0].replace("XX", "").lower() == plus[0].replace("XX", "").lower()
    stacklevel_only = "stacklevel" in minus[0] and _without_stacklevel(minus[0]) == _without_stacklevel(plus[0])
    if not (text_only or stacklevel_only):
        return False
    text = minus[0].strip()
    numbers = [i for i, line in enumerate(source.read_text().splitlines(), 1) if line.strip() == text]
    statements = _message_statements(source)
    return bool(numbers) and all(i in statements for i in numbers)


def read_equivalents() -> dict[str, tuple[str, str]]:
    """fingerprint -> (mutant name when judged, reason), from tools/mutation_equivalent.txt."""
    table: dict[str, tuple[str, str]] = {}
    if not EQUIVALENT_FILE.exists():
        return table
    for number, line in enumerate(EQUIVALENT_FILE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise SystemExit(f"{EQUIVALENT_FILE}:{number}: expected 'NAME FINGERPRINT REASON', got {line!r}")
        name, print_, reason = parts
        table[print_] = (name, reason)
    return table


def module_results(module: Module) -> dict | None:
    """Counts for one module from its workspace's survivors.json, with the equivalents applied."""
    path = WORKSPACES / module.name / "survivors.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    verdicts, diffs = data["verdicts"], data["diffs"]
    equivalents = read_equivalents()
    counts = {"mutants": len(verdicts), "killed": 0, "timeout": 0, "survived": 0, "no tests": 0,
              "not checked": 0, "other": 0}
    equivalent, cosmetic, undetected, matched = 0, 0, [], set()
    for name, status in verdicts.items():
        if status in ("killed", "segfault"):
            counts["killed"] += 1
        elif status in counts:
            counts[status] += 1
        else:
            counts["other"] += 1
        if status not in DETECTED and status != "not checked":
            print_ = fingerprint(name, diffs.get(name, ""))
            if is_cosmetic(diffs.get(name, ""), ROOT / _source_of(name)):
                cosmetic += 1
            elif print_ in equivalents:
                equivalent += 1
                matched.add(print_)
            else:
                undetected.append(name)
    judged = counts["mutants"] - equivalent - cosmetic
    detected = counts["killed"] + counts["timeout"]
    counts.update(equivalent=equivalent, cosmetic=cosmetic, score=detected / judged if judged else 1.0,
                  undetected=sorted(undetected), equivalents_matched=sorted(matched))
    return counts


def function_label(mutant: str) -> str:
    """graphsphere.graph.x\u01c1SphereGraph\u01c1load__mutmut_3 -> graphsphere.graph.SphereGraph.load"""
    module, _, function = mutant.partition("__mutmut_")[0].rpartition(".")
    function = function[2:] if function.startswith("x_") else function[1:].strip("\u01c1").replace("\u01c1", ".")
    return f"{module}.{function}"


def _source_of(mutant: str) -> str:
    """graphsphere.graph.x_knn__mutmut_3 -> graphsphere/graph.py (or .../__init__.py for a package)."""
    parts = mutant.partition("__mutmut_")[0].split(".")
    module = [p for p in parts if not p.startswith(("x_", "x\u01c1"))]
    path = "/".join(module)
    return path + ".py" if (ROOT / (path + ".py")).exists() else path + "/__init__.py"


def _run_module(module: Module, max_children: int, fresh: bool) -> float:
    ws = _workspace(module, fresh)
    state_file = ws / "run_state.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    tests_now = _tests_fingerprint(module)
    retest: list[str] = []
    if state.get("tests") not in (None, tests_now) and (ws / "survivors.json").exists():
        verdicts = json.loads((ws / "survivors.json").read_text())["verdicts"]
        retest = [name for name, status in verdicts.items() if status not in DETECTED]
    env = dict(os.environ, GRAPHSPHERE_ALLOW_SKIPS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", module.name,
               "--max-children", str(max_children), *(["--retest", ",".join(retest)] if retest else [])]
    start = time.monotonic()
    print(f"== {module.name}: mutmut on {', '.join(module.mutate)}", flush=True)
    subprocess.run(command, cwd=ws, env=env, check=True)
    seconds = time.monotonic() - start
    state.update(tests=tests_now, last_seconds=round(seconds, 1))
    if fresh or "first_seconds" not in state:
        state["first_seconds"] = round(seconds, 1)
    _atomic_write(state_file, json.dumps(state, indent=1))
    return seconds


def _record(module: Module, results: dict, state: dict) -> None:
    records = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    records[module.name] = {**{k: v for k, v in results.items() if k != "equivalents_matched"},
                            "layer": module.layer, "files": list(module.mutate), "tests": list(module.tests),
                            "seconds_from_scratch": state.get("first_seconds"),
                            "seconds_last_run": state.get("last_seconds"),
                            "date": time.strftime("%Y-%m-%d")}
    _atomic_write(RESULTS_JSON, json.dumps(records, indent=1, ensure_ascii=False) + "\n")


def write_table() -> str:
    """benchmarks/results/mutation.md from mutation.json (every module ever run)."""
    records = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    lines = [
        "# Mutation testing: latest scores per module",
        "",
        "Written by `tools/mutation.py` (mutmut 3; how to run it and how to judge a survivor: docs/testing.md).",
        "Score: mutants detected (killed, or timed out) / (mutants - equivalent - cosmetic). \"no tests\": mutants",
        "of functions that none of the module's selected tests calls, counted as not detected. \"equivalent\":",
        "survivors judged to change nothing observable (tools/mutation_equivalent.txt, one reason each).",
        "\"cosmetic\": survivors that only re-case an error or warning message or wrap it in XX...XX. Times:",
        "wall clock on the 2-core development machine (shared with other jobs), 2 mutmut workers; \"from scratch\"",
        "is a run with an empty cache, \"last run\" the latest (cached) one.",
        "",
        "| module | layer | mutants | killed | timeout | survived | no tests | equivalent | cosmetic | score | "
        "from scratch | last run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals: dict[str, list[int]] = {}
    for name in [*MODULES, *sorted(set(records) - set(MODULES))]:
        if name not in records:
            continue
        r = records[name]
        cosmetic = r.get("cosmetic", 0)
        unfinished = f" ({r['not checked']} not run yet)" if r.get("not checked") else ""
        lines.append(f"| {name}{unfinished} | {r['layer']} | {r['mutants']} | {r['killed']} | {r['timeout']} | "
                     f"{r['survived']} | "
                     f"{r['no tests']} | {r['equivalent']} | {cosmetic} | {100 * r['score']:.1f}% | "
                     f"{_minutes(r.get('seconds_from_scratch'))} | {_minutes(r.get('seconds_last_run'))} |")
        for key in (r["layer"], "all"):
            t = totals.setdefault(key, [0, 0, 0])
            t[0] += r["killed"] + r["timeout"]
            t[1] += r["mutants"] - r["equivalent"] - cosmetic
            t[2] += r["mutants"]
    lines.append("")
    for key, (detected, judged, total) in totals.items():
        label = {"core": "Core layers", "experiments": "Experiments' scoring", "all": "Overall"}[key]
        lines.append(f"- {label}: {detected} of {judged} non-equivalent mutants detected "
                     f"({100 * detected / max(judged, 1):.1f}%), {total} mutants in all.")
    by_function: dict[tuple[str, str], int] = {}
    for name, r in records.items():
        for mutant in r.get("undetected", []):
            key = (name, function_label(mutant))
            by_function[key] = by_function.get(key, 0) + 1
    if by_function:
        lines += ["", "## Not detected, not judged equivalent (per function)", "",
                  "`tools/mutation.py --survivors MODULE` prints them with their diffs.", ""]
        lines += [f"- {module}: `{function}`: {count}" for (module, function), count in sorted(by_function.items())]
    text = "\n".join(lines) + "\n"
    _atomic_write(RESULTS_MD, text)
    return text


def _minutes(seconds) -> str:
    return "" if seconds is None else f"{seconds / 60:.1f} min"


def record_equivalents(module: Module, names: list[str], reason: str) -> None:
    """Append survivors of ``module`` to tools/mutation_equivalent.txt, with their fingerprints."""
    data = json.loads((WORKSPACES / module.name / "survivors.json").read_text())
    known = read_equivalents()
    lines = []
    for name in names:
        if name not in data["diffs"]:
            raise SystemExit(f"{name} is not an undetected mutant of {module.name} (see --survivors)")
        print_ = fingerprint(name, data["diffs"][name])
        if print_ not in known:
            lines.append(f"{name} {print_} {' '.join(reason.split())}")
    text = EQUIVALENT_FILE.read_text() if EQUIVALENT_FILE.exists() else ""
    _atomic_write(EQUIVALENT_FILE, text + "".join(line + "\n" for line in lines))
    print(f"{len(lines)} recorded in {EQUIVALENT_FILE.relative_to(ROOT)}")


def _natural(mutant: str) -> tuple[str, int]:
    function, _, number = mutant.partition("__mutmut_")
    return function, int(number) if number.isdigit() else 0


def show_survivors(module: Module) -> None:
    """Print each undetected, unjudged mutant with its diff and the line to add if it is equivalent."""
    path = WORKSPACES / module.name / "survivors.json"
    if not path.exists():
        raise SystemExit(f"no results for {module.name}: run tools/mutation.py {module.name} first")
    data = json.loads(path.read_text())
    equivalents = read_equivalents()
    for name, diff in sorted(data["diffs"].items(), key=lambda item: _natural(item[0])):
        print_ = fingerprint(name, diff)
        if print_ in equivalents or is_cosmetic(diff, ROOT / _source_of(name)):
            continue
        print(f"# {data['verdicts'][name]}: {name}\n{diff.rstrip()}\n# if equivalent: {name} {print_} <reason>\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", help=f"modules to run: {', '.join(MODULES)}")
    parser.add_argument("--all", action="store_true", help="run every module")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument("--survivors", action="store_true", help="print the undetected mutants of the modules")
    parser.add_argument("--report", action="store_true", help="rewrite the table from the cache, run nothing")
    parser.add_argument("--fresh", action="store_true", help="delete the modules' caches first")
    parser.add_argument("--max-children", type=int, default=2, help="mutmut workers (default 2: the cores here)")
    parser.add_argument("--equivalent", nargs="+", metavar="MUTANT",
                        help="record these survivors of MODULE as equivalent, with --reason")
    parser.add_argument("--reason", help="the one-line reason for --equivalent")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--retest", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        _worker(MODULES[args.worker], args.max_children, [n for n in args.retest.split(",") if n])
        return 0
    if args.list:
        for m in MODULES.values():
            print(f"{m.name} ({m.layer}): mutates {' '.join(m.mutate)}\n    tests: {' '.join(m.tests)}"
                  + (f"\n    {m.note}" if m.note else ""))
        return 0
    unknown = [name for name in args.modules if name not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}: choose from {', '.join(MODULES)} (or --all)")
    chosen = list(MODULES.values()) if args.all else [MODULES[name] for name in args.modules]
    if not chosen and not args.report:
        parser.error("name a module (or several), or --all; --list shows them")
    if args.equivalent:
        if len(chosen) != 1 or not args.reason:
            parser.error("--equivalent needs one MODULE and a --reason")
        record_equivalents(chosen[0], args.equivalent, args.reason)
        return 0
    if args.survivors:
        for module in chosen:
            show_survivors(module)
        return 0
    for module in chosen if not args.report else [m for m in MODULES.values()
                                                   if (WORKSPACES / m.name / "survivors.json").exists()]:
        if not args.report:
            seconds = _run_module(module, args.max_children, args.fresh)
            print(f"== {module.name}: {seconds / 60:.1f} min", flush=True)
        results = module_results(module)
        state_file = WORKSPACES / module.name / "run_state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if results is not None:
            _record(module, results, state)
            write_table()
    print(write_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
