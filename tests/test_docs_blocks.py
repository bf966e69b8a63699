"""The documentation's YAML and shell blocks stay true: README.md and docs/**/*.md.

tests/test_docs.py runs the Python blocks; this file checks the others without running anything:

* every ```yaml block that is a training config (a mapping with ``task``, ``model`` or ``data``) is
  validated by :func:`graphsphere.train.config.load_train_config`, as ``graphsphere train`` would; a
  block that is only part of a config says so on its first line, to readers too: ``# fragment: <why>``
  (then it must still be a YAML mapping; fragments are listed at the end of the session);
* every ```bash block's ``graphsphere ...`` command (also ``.venv/bin/graphsphere``, after ``VAR=value``,
  ``nohup``/``srun``, and ``-m graphsphere.cli`` under torchrun or python) is parsed by the real parser,
  :func:`graphsphere.cli.build_parser`, and never run; its ``key=value`` overrides must read as overrides
  (:func:`graphsphere.config.apply_overrides`), and when its CONFIG is a file of the repository (or none,
  for the experiments), the config with the overrides is validated by the command's own loader.
  A deprecated spelling (``--nside``, ``-k``, ``--K``, ``--set``) fails too: it works, but is not to be taught.
  ``python``, ``pip``, ``bash`` and other commands are left alone.

A failure names the file, the line of the markdown and the command or block.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
from pathlib import Path

import pytest

markdown_it = pytest.importorskip("markdown_it")
yaml = pytest.importorskip("yaml")
pytest.importorskip("pydantic")

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in FILES]
YAML, SHELL = {"yaml", "yml"}, {"bash", "sh", "shell"}
#: The visible marker of a YAML block that is part of a config only: the block's first line.
FRAGMENT = re.compile(r"^\s*#\s*fragment\b\s*:?\s*(?P<why>.*)$", re.IGNORECASE)
CONFIG_SECTIONS = ("task", "model", "data")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_WRAPPERS = {"nohup", "srun", "time", "env", "exec"}
_SEPARATORS = {"&&", "||", ";", "|", "&"}
_REPORT: dict[str, list] = {"configs": [], "fragments": [], "commands": [], "other": [], "yaml_blocks": [],
                            "shell_blocks": []}


def fences(path: Path, languages: set[str]) -> list[tuple[int, str]]:
    """``(line of the block's first code line in the markdown, 1-based; code)`` of each fence in ``languages``."""
    blocks = []
    for token in markdown_it.MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
        if token.type == "fence" and token.info.strip().split(" ")[0].lower() in languages:
            blocks.append((token.map[0] + 2, token.content))
    return blocks


def fragment_reason(code: str) -> str | None:
    first = next((line for line in code.splitlines() if line.strip()), "")
    m = FRAGMENT.match(first)
    return (m.group("why").strip() or "no reason given") if m else None


def _strip_comment(line: str) -> str:
    """``line`` without its shell comment: ``#`` at the start of a word, outside quotes (bash's rule)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def shell_commands(code: str) -> list[tuple[int, list[str]]]:
    """``(offset of the line in the block, argv)`` of every simple command of a shell block: continuation
    lines joined, comments dropped, split at ``&&``, ``;``, ``|`` and ``&``, redirections cut off."""
    commands, logical, start = [], "", 0
    lines = code.splitlines()
    for i, line in enumerate(lines):
        if not logical:
            start = i
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical, text = "", _strip_comment(logical + line)
        lex = shlex.shlex(text, posix=True, punctuation_chars=True)
        lex.whitespace_split, lex.commenters = True, ""
        argv, redirected = [], False
        for token in [*lex, ";"]:
            if token in _SEPARATORS:
                if argv:
                    commands.append((start, argv))
                argv, redirected = [], False
            elif redirected or set(token) <= set("<>&"):
                redirected = True   # a redirection: the rest up to the next separator is its target
            else:
                argv.append(token)
    return commands


def graphsphere_argv(argv: list[str]) -> list[str] | None:
    """The arguments of a ``graphsphere`` command, or None for any other program."""
    words = list(argv)
    while words and (_ASSIGNMENT.match(words[0]) or words[0] in _WRAPPERS):
        words.pop(0)
    if words and os.path.basename(words[0]) == "graphsphere":
        return words[1:]
    for i, word in enumerate(words[:-1]):
        if word == "-m" and words[i + 1] in ("graphsphere.cli", "graphsphere"):
            return words[i + 2:]
    return None


def check_command(args: list[str]) -> None:
    """Parse ``graphsphere ARGS`` with the real parser (nothing runs); raise AssertionError with its words."""
    from graphsphere.cli import build_parser
    from graphsphere.config import apply_overrides

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            ns = build_parser().parse_args(args)
        except SystemExit as e:
            if e.code in (0, None) and {"-h", "--help", "--version"} & set(args):
                return
            raise AssertionError(f"the parser refuses it (exit {e.code}): {err.getvalue().strip()}") from None
    if "deprecated" in err.getvalue() or getattr(ns, "set", None):   # old spellings work, warn: not taught
        raise AssertionError(f"it uses a deprecated spelling: {err.getvalue().strip() or '--set (use KEY=VALUE)'}")
    overrides = list(getattr(ns, "overrides", None) or [])
    config = getattr(ns, "config", None)
    if config and "=" in config and getattr(ns, "experiment", None):   # an experiment given overrides only
        config, overrides = None, [config, *overrides]
    try:
        apply_overrides({}, overrides)
        if ns.command == "train" and (ROOT / config).is_file():
            from graphsphere.train.config import load_train_config

            load_train_config(ROOT / config, overrides)
        elif getattr(ns, "experiment", None) and (config is None or (ROOT / config).is_file()):
            module = importlib.import_module(f"graphsphere.experiments.{ns.experiment}")
            module.load_config(ROOT / config if config else None, overrides)
    except ValueError as e:   # ConfigError is a ValueError
        raise AssertionError(f"its overrides are refused: {e}") from None


def check_yaml_block(code: str) -> str:
    """``"config"`` (validated), ``"fragment"`` (marked) or ``"other"`` (YAML, but no training config);
    AssertionError for a config that does not validate or a fragment that is not a mapping."""
    from graphsphere.train.config import load_train_config

    data = yaml.safe_load(code)
    if fragment_reason(code) is not None:
        assert isinstance(data, dict), f"a '# fragment' block is a mapping of config sections, got {data!r}"
        return "fragment"
    if not (isinstance(data, dict) and any(k in data for k in CONFIG_SECTIONS)):
        return "other"
    try:
        load_train_config(data)
    except ValueError as e:
        raise AssertionError(f"{e}\n(a part of a config only? say so on its first line: '# fragment: <why>')") \
            from None
    return "config"


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    """At the end: how many blocks and commands were checked, and the fragments (past pytest's capture)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not (_REPORT["yaml_blocks"] or _REPORT["shell_blocks"]):
        return
    lines = [f"docs blocks: {len(_REPORT['yaml_blocks'])} yaml ({len(_REPORT['configs'])} configs validated, "
             f"{len(_REPORT['fragments'])} fragments marked, "
             f"{len(_REPORT['yaml_blocks']) - len(_REPORT['configs']) - len(_REPORT['fragments'])} other); "
             f"{len(_REPORT['shell_blocks'])} bash: {len(_REPORT['commands'])} graphsphere commands parsed, "
             f"{len(_REPORT['other'])} other commands left alone"]
    lines += [f"  fragment {where}" for where in _REPORT["fragments"]]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_yaml_configs_validate(path):
    rel = path.relative_to(ROOT)
    failures = []
    for line, code in fences(path, YAML):
        _REPORT["yaml_blocks"].append(f"{rel}:{line - 1}")
        try:
            kind = check_yaml_block(code)
        except (AssertionError, yaml.YAMLError) as e:
            failures.append(f"{rel}:{line - 1}: the yaml block is not a valid training config:\n{e}")
            continue
        if kind == "config":
            _REPORT["configs"].append(f"{rel}:{line - 1}")
        elif kind == "fragment":
            _REPORT["fragments"].append(f"{rel}:{line - 1} ({fragment_reason(code)})")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_shell_commands_parse(path):
    rel = path.relative_to(ROOT)
    failures = []
    for line, code in fences(path, SHELL):
        _REPORT["shell_blocks"].append(f"{rel}:{line - 1}")
        for offset, argv in shell_commands(code):
            args = graphsphere_argv(argv)
            if args is None:
                _REPORT["other"].append(argv[0])
                continue
            _REPORT["commands"].append(f"{rel}:{line + offset}")
            try:
                check_command(args)
            except AssertionError as e:
                failures.append(f"{rel}:{line + offset}: graphsphere {shlex.join(args)}\n  {e}")
    assert not failures, "\n\n".join(failures)


def test_the_checkers_find_commands_and_refuse_broken_ones(tmp_path):
    """The checkers themselves: commands are found behind prefixes and continuation lines, other programs are
    left alone, and a flag, an override or a config that the code no longer takes fails."""
    block = ("bash setup.sh && .venv/bin/graphsphere demo --out x   # a comment, it's here\n"
             "OMP_NUM_THREADS=1 nohup graphsphere cosmology seeds=[0,1] > log 2>&1 &\n"
             "torchrun --nproc_per_node=2 -m graphsphere.cli train run.yaml \\\n    trainer.devices=2  # a#b\n"
             "python -m graphsphere.data.synthetic --bogus\npip install -e '.[train]'\n"
             "graphsphere climate \"sampling={type: Icosahedral, level: 4}\"\n")
    found = [(offset, graphsphere_argv(argv)) for offset, argv in shell_commands(block)]
    assert found == [(0, None), (0, ["demo", "--out", "x"]), (1, ["cosmology", "seeds=[0,1]"]),
                     (2, ["train", "run.yaml", "trainer.devices=2"]), (4, None), (5, None),
                     (6, ["climate", "sampling={type: Icosahedral, level: 4}"])]
    for _, args in found:
        if args is not None:
            check_command(args)
    check_command(["--help"])
    check_command(["train", "experiments/example_synthetic.yaml", "trainer.max_epochs=10", "--verbose"])
    refused = {("demo", "--bogus"): "unrecognized arguments: --bogus",
               ("train", "run.yaml", "trainer.max_epochs"): "looks like section.field=value",
               ("train", "experiments/example_synthetic.yaml", "trainer.max_epoch=3"): "did you mean 'max_epochs'",
               ("cosmology", "data.nsid=64"): "did you mean 'nside'",
               ("evaluate",): "needs a CHECKPOINT",
               ("spectrum", "--nside", "16"): "deprecated spelling: warning: --nside is deprecated",
               ("evaluate", "best.ckpt", "--set", "data.noise=0.5"): "deprecated spelling: --set",
               ("filter", "--sampling", "healpix:8", "--chebterms", "4"): "unrecognized arguments: --chebterms"}
    for args, words in refused.items():
        with pytest.raises(AssertionError, match=re.escape(words)):
            check_command(list(args))
    assert check_yaml_block("task: classification\nmodel: {type: SphericalCNN, channels: [4], K: 2}\n") == "config"
    assert check_yaml_block("# fragment: the model only\nmodel: {type: ConvNet2D}\n") == "fragment"
    assert check_yaml_block("name: not a config\n") == "other"
    with pytest.raises(AssertionError, match="max_epoch: unknown field"):
        check_yaml_block("task: classification\ntrainer: {max_epoch: 3}\n")
    with pytest.raises(AssertionError, match="task: required field missing"):   # unmarked fragment: refused
        check_yaml_block("model: {type: ConvNet2D}\n")
    md = tmp_path / "x.md"
    md.write_text("- a list\n\n  ```yaml\n  task: regression\n  ```\n\n```bash\ngraphsphere info\n```\n")
    assert fences(md, YAML) == [(4, "task: regression\n")] and fences(md, SHELL) == [(8, "graphsphere info\n")]
