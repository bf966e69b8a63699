"""Results of several invocations of one experiment, merged: the table never shrinks.

An experiment writes ``results.json`` with a ``settings`` digest of everything that makes its runs
comparable (its config without the sweep's lists: methods, seeds, ...). The next invocation with the
same settings merges its runs into that file; one with other settings sets the old files aside as
``results_<digest>.json`` and ``.md`` and starts a new table.

>>> cfg = {"lr": 0.01, "methods": ["a"], "data": {"nside": 8, "orders": [1]}}
>>> other = {"lr": 0.01, "methods": ["a", "b"], "data": {"nside": 8, "orders": [1, 2]}}
>>> settings_digest(cfg, {"methods", "data.orders"}) == settings_digest(other, {"methods", "data.orders"})
True
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["settings_digest", "previous_results"]


def settings_digest(config: dict, sweep: set[str] | frozenset[str]) -> str:
    """Eight hex digits of ``config`` without the keys in ``sweep`` (dotted for nested ones:
    ``"data.orders"``)."""
    settings = copy.deepcopy(config)
    for key in sweep:
        *parents, last = key.split(".")
        node = settings
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]


def previous_results(out: Path, digest: str, name: str,
                     usable: Callable[[dict], bool] = lambda old: True) -> dict:
    """The results in ``out/results.json`` if they were measured under the settings ``digest`` (and
    ``usable`` accepts them), else ``{}``: results of other settings, of an older format or unreadable
    are moved aside as ``results_<their digest or date>.json`` and ``.md`` (said on stdout, prefixed
    ``[name]``)."""
    out = Path(out)
    path = out / "results.json"
    if not path.exists():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    if not isinstance(old, dict):
        old = {}
    if old.get("settings") == digest and usable(old):
        return old
    tag = old.get("settings") or time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    for file in ("results.json", "results.md"):
        if (out / file).exists():
            (out / file).replace(out / file.replace("results", f"results_{tag}"))
    print(f"[{name}] {path} holds results of other settings: kept as results_{tag}.json and .md; "
          "the table starts over", flush=True)
    return {}
