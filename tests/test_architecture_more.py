"""The pictures of the architecture say what the import contract says: docs/architecture.md's table and
docs/images/architecture.py's layers are pyproject.toml's layers, top to bottom."""

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _contract_layers() -> list[set[str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return [{name.strip().removeprefix("graphsphere.") for name in layer.split("|")} for layer in cfg["layers"]]


def test_the_table_of_docs_architecture_is_the_contract():
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| layer ")]
    table = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        if len(cells) != 3 or not cells[1].startswith("`"):
            continue  # another table of the page
        table.append({m.split("/")[0] for m in re.findall(r"`([^`]+)`", cells[1])})
    assert table == _contract_layers()


def test_the_picture_script_draws_the_contract():
    tree = ast.parse((ROOT / "docs" / "images" / "architecture.py").read_text())
    layers = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "layers" for t in node.targets))
    drawn = [{m.split()[0] for m in ast.literal_eval(entry)[1]} for entry in layers.elts]
    assert drawn == _contract_layers()
