"""The shapes experiment over several seeds: mean and spread per model, paired differences, their tables.

Each seed of ``data.seed: [0, 1, 2]`` is a new split by object and new perturbations, and both models of a
seed train and test on the same samples. :func:`summarize` gives, per (protocol, method), the mean, the
sample standard deviation (``ddof=1``; ``None`` with one seed) and the min and max over seeds of every
metric of :data:`METRICS`; :func:`paired_differences` gives, per protocol, the same for DeepSphere minus
the SHT CNN seed by seed (the samples are shared, so the split's luck cancels in the difference: this is
what says whether one model leads).

>>> def run(seed, method, acc, m_ap):
...     return {"seed": seed, "protocol": "SO3/SO3", "method": method, "accuracy": acc, "accuracy_no_tta": acc,
...             "f1_weighted": acc, "micro": {"mAP": m_ap}, "macro": {"mAP": m_ap}}
>>> runs = [run(0, "deepsphere", 0.70, 0.6), run(0, "sht_cnn", 0.60, 0.5),
...         run(1, "deepsphere", 0.50, 0.4), run(1, "sht_cnn", 0.50, 0.5)]
>>> s = summarize(runs)[0]
>>> s["method"], s["n"], round(s["accuracy"]["mean"], 3), round(s["accuracy"]["std"], 4), s["accuracy"]["min"]
('deepsphere', 2, 0.6, 0.1414, 0.5)
>>> d = paired_differences(runs)[0]
>>> round(d["accuracy"]["mean"], 3), round(d["mAP_micro"]["mean"], 3), d["ahead"], d["n"]   # a tie counts
(0.05, 0.0, 2, 2)
"""

from __future__ import annotations

import numpy as np

from .config import LABELS

__all__ = ["METRICS", "metric", "spread", "summarize", "paired_differences", "summary_lines"]

#: the metrics summarised over seeds: name -> (how it is read off a run, its label in the tables, percent?)
METRICS = {"accuracy": ("accuracy", "accuracy (%)", True),
           "accuracy_no_tta": ("accuracy_no_tta", "no TTA (%)", True),
           "f1_weighted": ("f1_weighted", "F1 (%)", True),
           "mAP_micro": ("micro.mAP", "mAP micro", False),
           "mAP_macro": ("macro.mAP", "mAP macro", False)}

#: the paired difference: this method minus that one
PAIR = ("deepsphere", "sht_cnn")


def metric(run: dict, name: str) -> float:
    """A metric of :data:`METRICS` read off a run's record (``micro.mAP`` is ``run["micro"]["mAP"]``)."""
    value = run
    for key in METRICS[name][0].split("."):
        value = value[key]
    return float(value)


def spread(values) -> dict:
    """Mean, sample standard deviation (``None`` for one value), min and max.

    >>> spread([1.0, 2.0, 6.0])
    {'mean': 3.0, 'std': 2.6457513110645907, 'min': 1.0, 'max': 6.0}
    >>> spread([0.5])["std"] is None
    True
    """
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "min": float(v.min()), "max": float(v.max())}


def _groups(runs: list[dict]) -> dict:
    """{(protocol, method): {seed: run}} in the order the runs came."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["protocol"], r["method"]), {})[r["seed"]] = r
    return groups


def summarize(runs: list[dict]) -> list[dict]:
    """Per (protocol, method), in the runs' order: ``n`` seeds, the ``seeds``, and :func:`spread` of every
    metric of :data:`METRICS` over them."""
    return [{"protocol": protocol, "method": method, "n": len(by_seed), "seeds": list(by_seed),
             **{name: spread([metric(r, name) for r in by_seed.values()]) for name in METRICS}}
            for (protocol, method), by_seed in _groups(runs).items()]


def paired_differences(runs: list[dict], pair: tuple[str, str] = PAIR) -> list[dict]:
    """Per protocol with both methods of ``pair``: ``pair[0]`` minus ``pair[1]`` seed by seed, on the seeds
    both have: ``n``, the ``seeds``, :func:`spread` of every metric's difference, and ``ahead``: on how many
    seeds ``pair[0]``'s accuracy is at least ``pair[1]``'s."""
    groups, out = _groups(runs), []
    for protocol in dict.fromkeys(r["protocol"] for r in runs):
        a, b = groups.get((protocol, pair[0]), {}), groups.get((protocol, pair[1]), {})
        seeds = [s for s in a if s in b]
        if not seeds:
            continue
        diffs = {name: [metric(a[s], name) - metric(b[s], name) for s in seeds] for name in METRICS}
        out.append({"protocol": protocol, "of": pair[0], "minus": pair[1], "n": len(seeds), "seeds": seeds,
                    **{name: spread(d) for name, d in diffs.items()},
                    "ahead": sum(d >= 0 for d in diffs["accuracy"])})
    return out


def _pm(s: dict, percent: bool, sign: bool = False) -> str:
    scale, fmt = (100, ".1f") if percent else (1, ".3f")
    mean = format(scale * s["mean"], ("+" if sign else "") + fmt)
    return mean if s["std"] is None else f"{mean} ± {format(scale * s['std'], fmt)}"


def summary_lines(results: dict) -> list[str]:
    """The markdown tables of several seeds: mean ± std (and n, min-max of the accuracy) per protocol and
    model, then the paired differences; empty when the results hold one seed."""
    seeds = list(dict.fromkeys(r["seed"] for r in results["runs"]))
    if len(seeds) < 2:
        return []
    summary = results.get("summary") or summarize(results["runs"])
    paired = results.get("paired_differences")
    paired = paired_differences(results["runs"]) if paired is None else paired
    head = " | ".join(label for _, label, _ in METRICS.values())
    lines = [f"Over {len(seeds)} seeds ({', '.join(map(str, seeds))}; each a new split and new perturbations, "
             "the same for both models): mean ± sample standard deviation over seeds.", "",
             f"| protocol | model | n | {head} | accuracy min-max (%) |",
             "|---|---|---|" + "---|" * len(METRICS) + "---|"]
    for s in summary:
        cells = [_pm(s[name], percent) for name, (_, _, percent) in METRICS.items()]
        acc = s["accuracy"]
        lines.append(f"| {s['protocol']} | {LABELS[s['method']]} | {s['n']} | " + " | ".join(cells)
                     + f" | {100 * acc['min']:.1f}-{100 * acc['max']:.1f} |")
    if paired:
        lines += ["", f"Paired difference, {LABELS[PAIR[0]]} minus {LABELS[PAIR[1]]}, seed by seed (both models "
                      "see the same samples, so the split's luck cancels): mean ± std over seeds; a mean within "
                      "about 2 std / sqrt(n) of 0 ranks neither model.", "",
                  f"| protocol | n | {head.replace('(%)', '(points)')} | seeds with DeepSphere >= SHT CNN (accuracy) |",
                  "|---|---|" + "---|" * len(METRICS) + "---|"]
        for d in paired:
            cells = [_pm(d[name], percent, sign=True) for name, (_, _, percent) in METRICS.items()]
            lines.append(f"| {d['protocol']} | {d['n']} | " + " | ".join(cells)
                         + f" | {d['ahead']} of {d['n']} |")
    return lines + ["", "Per seed:", ""]
