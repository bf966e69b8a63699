"""Training checkpoints: read safely, upgrade old formats, say clearly what is wrong.

A checkpoint is a Lightning checkpoint whose ``"graphsphere"`` entry holds
what rebuilds the trained module without the config file: the validated
config, the model's type, sampling state and arguments, the data's channels
and outputs (format :data:`CHECKPOINT_FORMAT`), and the SHA-256 of all its
tensors (:func:`tensor_digest`, verified on every read). It is loaded with
``torch.load(weights_only=True)`` (tensors and plain types only), and the
class it names is built only if it is a registered model, unless the caller
trusts the file's code (``trust_code``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "CHECKPOINT_FORMAT", "read_checkpoint", "upgrade", "tensor_digest", "verify_digest"]

#: 1: graphsphere 0.1 (operators in the state_dict, the sampling as constructor arguments).
CHECKPOINT_FORMAT = 2


class CheckpointError(ValueError):
    """A checkpoint that is not ours, is damaged, or belongs to another model or run."""


def read_checkpoint(path) -> dict[str, Any]:
    """Load a graphsphere checkpoint (tensors only: safe with ``weights_only``), upgraded to the current format."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path.resolve()}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the path of a .ckpt file (e.g. {path}/checkpoints/best.ckpt)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): the run was killed while writing it, or the disk is full; "
                              "use checkpoints/best.ckpt, or start afresh with trainer.resume=false")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not one of ours"
        raise CheckpointError(
            f"{path} is not a readable graphsphere checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "if it is damaged, use checkpoints/best.ckpt or start afresh with trainer.resume=false") from None
    if not isinstance(ckpt, dict) or "graphsphere" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path} is not a graphsphere training checkpoint (no 'graphsphere' entry; found "
                              f"{keys}); checkpoints are written by graphsphere.train.fit / `graphsphere train`")
    verify_digest(ckpt, path)
    try:
        return upgrade(ckpt)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


#: Buffers that format 1 stored and that are now rebuilt from the sampling.
_V1_BUFFERS = ("op_indptr", "op_indices", "op_values", "index", "weights", "rows", "cols", "parent", "area",
               "_extra_state")
#: The cosmology experiment's model of graphsphere 0.1: a SphericalCNN that standardised its input.
_V1_STANDARDIZED = "graphsphere.experiments.cosmology:StandardizedSphericalCNN"


def upgrade(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an earlier format as a current one (in place)."""
    meta = ckpt["graphsphere"]
    fmt = meta.get("format")
    if fmt == CHECKPOINT_FORMAT:
        return ckpt
    if fmt != 1:
        raise CheckpointError(f"checkpoint format {fmt!r} is not supported: this graphsphere reads formats 1 and "
                              f"{CHECKPOINT_FORMAT}; evaluate it with the graphsphere version that wrote it")
    config = meta["config"]
    model = dict(config["model"])
    model_type = model.pop("type")
    state = {k: v for k, v in ckpt["state_dict"].items() if k.rsplit(".", 1)[-1] not in _V1_BUFFERS}
    standardize = {"inputs": False, "targets": False}
    if model_type == _V1_STANDARDIZED:
        mean, std = model.pop("input_mean"), model.pop("input_std")
        state.pop("model.input_mean", None), state.pop("model.input_std", None)
        state["input_norm.mean"] = torch.tensor([float(mean)])
        state["input_norm.std"] = torch.tensor([float(std)])
        model_type, standardize["inputs"] = "SphericalCNN", True
    config["model"] = {"type": model_type, **model}
    config["data"] = dict(config["data"], standardize_inputs=standardize["inputs"], standardize_targets=False)
    ckpt["state_dict"] = state
    ckpt["graphsphere"] = {"format": CHECKPOINT_FORMAT, "config": config, "sampling": meta["sampling"],
                           "in_channels": meta["in_channels"], "n_out": meta["n_out"],
                           "class_names": meta.get("class_names"), "standardize": standardize,
                           "upgraded_from": 1}
    return ckpt


def _tensors(obj, path: str = ""):
    """Every tensor in a nested checkpoint, with its key path, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield path, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if k != DIGEST_KEY:
                yield from _tensors(obj[k], f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{path}/{i}")


#: Where a checkpoint keeps the digest of its own tensors.
DIGEST_KEY = "graphsphere_digest"


def tensor_digest(ckpt: dict[str, Any]) -> str:
    """SHA-256 over every tensor of a checkpoint (key path, dtype, shape, bytes): stored in the
    checkpoint when it is written, recomputed when it is read, so bytes changed inside a tensor
    (a damaged disk, a bad copy) are caught instead of loading silently."""
    import hashlib

    h = hashlib.sha256()
    for path, t in _tensors(ckpt):
        t = t.detach().cpu().contiguous()
        h.update(f"{path}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def verify_digest(ckpt: dict[str, Any], path) -> None:
    """Raise :class:`CheckpointError` if the checkpoint's tensors do not match their stored digest
    (checkpoints without one, written before it existed, pass)."""
    stored = ckpt.get(DIGEST_KEY)
    if stored is not None and stored != tensor_digest(ckpt):
        raise CheckpointError(f"{path} is damaged: its tensors do not match the checksum written with them; "
                              "use checkpoints/best.ckpt, or start afresh with trainer.resume=false")
