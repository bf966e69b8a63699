"""``graphsphere train / evaluate / predict``: the training engine on the command line.

    graphsphere train experiments/example_synthetic.yaml trainer.max_epochs=3 optim.lr=0.01
    graphsphere evaluate out/runs/example_synthetic/checkpoints/best.ckpt data.noise=0.5 --split test
    graphsphere predict out/runs/example_synthetic/checkpoints/best.ckpt maps.npy --out pred.nc

Overrides are positional ``section.field=value`` (the value read as YAML) for
every command; ``--device auto|cpu|cuda`` chooses the hardware. Errors in
the config, the data or a checkpoint are printed as one clear message (exit
status 2, see graphsphere.cli), before any training starts.
"""

from __future__ import annotations

import argparse
import json
import sys


def _train(args) -> int:
    from graphsphere.train import fit

    overrides = list(args.overrides)
    if args.verbose:
        overrides.append("trainer.verbose=true")
    if args.device:
        overrides += _device_overrides(args.device)
    result = fit(args.config, overrides, trust_code=args.trust_code)
    if result.module is not None and result.module.trainer.is_global_zero:
        print(json.dumps({"output_dir": str(result.output_dir), "epochs": result.epochs,
                          "global_step": result.global_step, "metrics": result.metrics,
                          "best_checkpoint": str(result.best_checkpoint)}, indent=2))
    return 0


def _device_overrides(device: str) -> list[str]:
    """``--device`` as the training config says it: trainer.accelerator (and the GPU index)."""
    from graphsphere.train.engine import resolve_device

    if device == "auto":
        return ["trainer.accelerator=auto"]
    device = resolve_device(device)
    if device == "cpu":
        return ["trainer.accelerator=cpu"]
    return ["trainer.accelerator=gpu", f"trainer.devices=[{int(device.partition(':')[2] or 0)}]"]


def _evaluate(args) -> int:
    from graphsphere.train import evaluate

    overrides = list(args.overrides) + list(args.set or [])
    if args.set:
        print("warning: --set is deprecated and will be removed in the next release; write the overrides "
              "after the checkpoint: graphsphere evaluate CHECKPOINT " + " ".join(args.set), file=sys.stderr)
    metrics = evaluate(args.checkpoint, split=args.split, overrides=overrides, batch_size=args.batch_size,
                       device=args.device, trust_code=args.trust_code)
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


def _predict(args) -> int:
    from graphsphere.data.io import write_predictions
    from graphsphere.train import predict
    from graphsphere.train.module import SphereTask

    module = SphereTask.from_checkpoint(args.checkpoint, trust_code=args.trust_code)
    pred = predict(module, args.input, batch_size=args.batch_size, device=args.device,
                   check_order=not args.no_check_order, var=args.var, fits_fields=args.fits_fields,
                   patch_nside=args.patch_nside, border=args.border)
    path = write_predictions(pred, args.out, module.sampling, module.task)
    print(f"wrote predictions {list(pred.shape)} to {path}")
    return 0


_TRUST = ("run code the config or checkpoint names outside graphsphere (model.type: 'package.module:Class'); "
          "only for files you trust: a checkpoint could name any code")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (resumes if interrupted)",
                       description="Train from a YAML config; overrides like trainer.max_epochs=3 follow it. "
                                   "Re-running the same command resumes from output_dir/checkpoints/last.ckpt.")
    p.add_argument("config", metavar="CONFIG", help="YAML config (see experiments/example_*.yaml)")
    p.add_argument("overrides", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                   help="config overrides (YAML values), anywhere after CONFIG")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the config's trainer.accelerator)")
    p.add_argument("--verbose", action="store_true", help="print the table of the model's layers")
    p.add_argument("--trust-code", action="store_true", help=_TRUST)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on its data set's test (or val) split")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint of graphsphere train (.ckpt)")
    p.add_argument("overrides", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                   help="change the data, e.g. data.noise=0.5 (YAML values), anywhere after CHECKPOINT")
    p.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)  # before 0.2: --set KEY=VALUE
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--json", default=None, help="also write the metrics to this file")
    p.add_argument("--trust-code", action="store_true", help=_TRUST)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="run a checkpoint on maps (.npy, .fits, .nc)")
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a checkpoint of graphsphere train (.ckpt)")
    p.add_argument("input", nargs="+", metavar="INPUT",
                   help=".npy [n, npix(, C)], HEALPix .fits, or NetCDF .nc; several files: "
                        "their channels, in the order of the training inputs")
    p.add_argument("--out", required=True, help="output file: .npy, .nc (NetCDF) or .fits (HEALPix maps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--var", default=None, help="NetCDF variable to read")
    p.add_argument("--fits-fields", default="auto", choices=["auto", "channels", "samples"],
                   help="what the fields of a FITS file are (auto: channels if they fit the model, else samples)")
    p.add_argument("--no-check-order", action="store_true", help="skip the NESTED/RING check of full-sky maps")
    p.add_argument("--patch-nside", type=int, default=None, metavar="N",
                   help="skies too large for one pass: predict per HEALPix pixel at nside N (a core) with a border "
                        "of context, reassembled into one map (per-pixel models; see docs/patches.md)")
    p.add_argument("--border", type=int, default=None, metavar="RINGS",
                   help="with --patch-nside: rings of the model's coarsest-level pixels around each core "
                        "(default: its receptive field, the one-pass result to float precision)")
    p.add_argument("--trust-code", action="store_true", help=_TRUST)
    p.set_defaults(func=_predict)
