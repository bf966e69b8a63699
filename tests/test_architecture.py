"""The architecture holds: layers as docs/architecture.md draws them, small modules, loud commands."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "graphsphere"
#: Modules longer than this state in their docstring why they are long.
MAX_LINES = 600


def test_import_contracts_hold():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint, "import-linter is part of the test extra (pip install -e '.[test]')"
    run = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_every_layer_named_in_the_contracts_exists():
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    names = [n.strip() for layer in cfg["layers"] for n in layer.split("|")]
    for name in names:
        rel = Path(*name.split(".")[1:])
        assert (PACKAGE / rel).is_dir() or (PACKAGE / rel).with_suffix(".py").is_file(), name
    # and every top-level module of the package is in a layer (a new one must be placed)
    tops = {p.stem for p in PACKAGE.iterdir() if (p.suffix == ".py" and p.stem != "__init__")
            or (p.is_dir() and (p / "__init__.py").exists())}
    assert tops - {n.split(".")[1] for n in names} == set()


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_short_or_say_why(path):
    n = len(path.read_text().splitlines())
    if n > MAX_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "long because" in doc.lower(), f"{path.name}: {n} lines; split it or say why in its docstring"


def test_a_command_module_that_fails_to_import_is_an_error(monkeypatch):
    from graphsphere import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "graphsphere.commands.nonexistent"])
    with pytest.raises(ModuleNotFoundError, match="nonexistent"):
        cli.build_parser()


def test_version_and_one_error_path(capsys):
    from graphsphere import __version__
    from graphsphere.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"graphsphere {__version__}"
    assert main(["evaluate", "missing.ckpt"]) == 2
    assert capsys.readouterr().err.startswith("error: checkpoint not found")
    with pytest.raises(FileNotFoundError):
        main(["--debug", "evaluate", "missing.ckpt"])
