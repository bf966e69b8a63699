"""``graphsphere train / evaluate / predict``: the training engine on the command line.

    graphsphere train experiments/example_synthetic.yaml trainer.max_epochs=3 optim.lr=0.01
    graphsphere evaluate runs/example_synthetic/checkpoints/best.ckpt --split test --set data.noise=0.5
    graphsphere predict runs/example_synthetic/checkpoints/best.ckpt maps.npy --out pred.nc

Overrides are ``section.field=value`` with the value read as YAML. Errors in
the config, the data or a checkpoint are printed as one clear message (exit
status 2, see graphsphere.cli), before any training starts.
"""

from __future__ import annotations

import json


def _train(args) -> int:
    from graphsphere.train import fit

    result = fit(args.config, args.overrides, trust_code=args.trust_code)
    if result.module is not None and result.module.trainer.is_global_zero:
        print(json.dumps({"output_dir": str(result.output_dir), "epochs": result.epochs,
                          "global_step": result.global_step, "metrics": result.metrics,
                          "best_checkpoint": str(result.best_checkpoint)}, indent=2))
    return 0


def _evaluate(args) -> int:
    from graphsphere.train import evaluate

    metrics = evaluate(args.checkpoint, split=args.split, overrides=args.overrides, batch_size=args.batch_size,
                       accelerator=args.accelerator, devices=args.devices, trust_code=args.trust_code)
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
                   check_order=not args.no_check_order, var=args.var)
    path = write_predictions(pred, args.out, module.sampling, module.task)
    print(f"wrote predictions {list(pred.shape)} to {path}")
    return 0


_TRUST = ("run code the config or checkpoint names outside graphsphere (model.type: 'package.module:Class'); "
          "only for files you trust: a checkpoint could name any code")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (resumes if interrupted)",
                       description="Train from a YAML config; overrides like trainer.max_epochs=3 follow it. "
                                   "Re-running the same command resumes from output_dir/checkpoints/last.ckpt.")
    p.add_argument("config", help="YAML config (see experiments/example_*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="SECTION.FIELD=VALUE", help="config overrides (YAML values)")
    p.add_argument("--trust-code", action="store_true", help=_TRUST)
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="metrics of a checkpoint on its data set's test (or val) split")
    p.add_argument("checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="change the data, e.g. --set data.noise=0.5 (repeatable)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the metrics to this file")
    p.add_argument("--trust-code", action="store_true", help=_TRUST)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="run a checkpoint on maps (.npy, .fits, .nc)")
    p.add_argument("checkpoint")
    p.add_argument("input", help=".npy [n, npix(, C)], HEALPix .fits, or NetCDF .nc")
    p.add_argument("--out", required=True, help="output file: .npy, .nc (NetCDF) or .fits (HEALPix maps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--var", default=None, help="NetCDF variable to read")
    p.add_argument("--no-check-order", action="store_true", help="skip the NESTED/RING check of full-sky maps")
    p.add_argument("--trust-code", action="store_true", help=_TRUST)
    p.set_defaults(func=_predict)
