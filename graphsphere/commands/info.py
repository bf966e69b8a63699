"""``graphsphere info``: versions, cores and threads, devices (and what ``--device auto`` picks),
the data cache and where the commands write (``--out``, default ``out/<command>``)."""

from __future__ import annotations

import importlib
import os
import platform


def cache_dir():
    """The data cache: ``$GRAPHSPHERE_CACHE`` or ``~/.cache/graphsphere``."""
    from pathlib import Path

    return Path(os.environ.get("GRAPHSPHERE_CACHE", Path.home() / ".cache" / "graphsphere"))


def collect() -> dict[str, str]:
    """What ``graphsphere info`` prints, as a dict.

    >>> sorted(k for k in collect() if k.startswith("--"))
    ['--device auto']
    """
    from pathlib import Path

    import torch

    import graphsphere

    from .options import resolve_device

    info = {"graphsphere": graphsphere.__version__, "python": platform.python_version(),
            "platform": platform.platform()}
    for name in ["numpy", "scipy", "healpy", "torch", "lightning", "torch_geometric", "pyccl", "sklearn",
                 "matplotlib"]:
        try:
            info[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            info[name] = "not installed"
    info["cpu cores"] = str(os.cpu_count())
    info["torch threads"] = str(torch.get_num_threads())
    info["cuda"] = (f"{torch.cuda.device_count()} device(s): "
                    + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
                    if torch.cuda.is_available() else "not available")
    info["--device auto"] = resolve_device("auto")
    info["outputs (--out)"] = f"{Path('out').resolve()}/<command>"
    d = cache_dir()
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file()) if d.exists() else 0
    info["data cache"] = f"{d} ({size / 1e6:.1f} MB)"
    return info


def run(args) -> int:
    for k, v in collect().items():
        print(f"{k:>16}: {v}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, threads, devices, data cache")
    p.set_defaults(func=run)
