"""Metrics per task, as ``torchmetrics`` collections (they sum their states
across processes under DDP, so a metric over a split is exact however the
split is sharded).

- classification: accuracy, macro F1, mAP (macro average precision of the
  softmax scores, as in SHREC'17 and the climate paper);
- regression: MSE, MAE, R² (averaged over outputs);
- segmentation (a class per pixel): pixel accuracy, macro F1, per-class IoU,
  recall and average precision (``iou_c``, ``recall_c``, ``ap_c``) and their
  means (``miou``, ``mrecall``: the climate paper's "mean accuracy", ``map``).

>>> import torch
>>> m = make_metrics("classification", 2)
>>> m.update(torch.tensor([[2., 0], [0, 2], [1, 0]]), torch.tensor([0, 1, 1]))
>>> {k: round(float(v), 3) for k, v in m.compute().items()}
{'acc': 0.667, 'f1': 0.667, 'map': 1.0}
"""

from __future__ import annotations

import torch

__all__ = ["make_metrics", "flatten_metrics", "TASKS"]

TASKS = ("classification", "regression", "segmentation")


def make_metrics(task: str, n_out: int):
    """A ``MetricCollection`` for ``task``; ``n_out`` is the number of classes
    (classification, segmentation) or of regression outputs.

    Updates take the model's raw output: logits ``[B, C]`` (classification),
    ``[B, V, C]`` (segmentation), values ``[B, n_out]`` or ``[B, V, n_out]``
    (regression), with targets as the loss takes them.
    """
    import torchmetrics as tm
    from torchmetrics import classification as tmc
    from torchmetrics import regression as tmr

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "regression":
        return _Flat(tm.MetricCollection({
            "mse": tmr.MeanSquaredError(), "mae": tmr.MeanAbsoluteError(),
            "r2": tmr.R2Score(multioutput="uniform_average")}), n_out, dense=None)
    if n_out < 2:
        raise ValueError(f"{task} needs at least 2 classes, got {n_out}")
    metrics = {"acc": tmc.MulticlassAccuracy(n_out, average="micro"),
               "f1": tmc.MulticlassF1Score(n_out, average="macro")}
    if task == "classification":
        metrics["map"] = tmc.MulticlassAveragePrecision(n_out, average="macro")
    else:
        metrics["iou"] = tmc.MulticlassJaccardIndex(n_out, average="none")
        # Per-class recall (its mean is the climate paper's "mean accuracy") and average precision
        # (its mean: mAP), binned on 200 thresholds so that millions of pixels cost fixed memory.
        metrics["recall"] = tmc.MulticlassRecall(n_out, average="none")
        metrics["ap"] = tmc.MulticlassAveragePrecision(n_out, average="none", thresholds=200)
    return _Flat(tm.MetricCollection(metrics), n_out, dense=task == "segmentation")


class _Flat(torch.nn.Module):
    """Wraps a collection: reshapes dense outputs to rows, turns logits into
    probabilities, and splits the per-class IoU vector into scalars."""

    def __init__(self, collection, n_out: int, dense: bool | None):
        super().__init__()
        self.collection, self.n_out, self.dense = collection, n_out, dense

    @torch.no_grad()
    def update(self, output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Rows that do not count are left out: regression rows with a NaN target, segmentation labels
        -1, and rows of ``weight`` 0 (per sample ``[B]`` or per pixel ``[B, V]``)."""
        output = output.detach().float()
        n = self.n_out
        if self.dense is None:  # regression: one row per value vector
            out, tgt = output.reshape(-1, n), target.reshape(-1, n).float()
            keep = torch.isfinite(tgt).all(-1)
        else:
            out, tgt = output.reshape(-1, n), target.reshape(-1).long()
            keep = tgt >= 0
        if weight is not None:
            rows = out.shape[0] // weight.shape[0]              # rows per sample: 1, or the pixels
            w = weight.reshape(weight.shape[0], -1).to(keep.device)
            keep &= (w.expand(-1, rows) if w.shape[1] == 1 else w).reshape(-1) > 0
        if not keep.any():
            return
        out, tgt = out[keep], tgt[keep]
        if self.dense is None:
            self.collection.update(out.squeeze(-1), tgt.squeeze(-1))
        else:
            self.collection.update(out.softmax(-1), tgt)

    def compute(self) -> dict[str, torch.Tensor]:
        return flatten_metrics(self.collection.compute())

    def reset(self) -> None:
        self.collection.reset()


def flatten_metrics(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"iou": tensor([a, b])}`` -> ``{"iou_0": a, "iou_1": b, "miou": mean}``."""
    out = {}
    for k, v in values.items():
        if v.ndim == 0:
            out[k] = v
        else:
            for i, vi in enumerate(v):
                out[f"{k}_{i}"] = vi
            out[f"m{k}"] = v.nanmean()  # a class absent from the split has no recall or AP: left out
    return out
