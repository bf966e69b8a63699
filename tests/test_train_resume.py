"""Nothing lost: a run killed with SIGKILL in the middle of an epoch resumes
from its last checkpoint and ends with exactly the weights of a run that was
never interrupted (same seed)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytest.importorskip("lightning")

from graphsphere.train import fit  # noqa: E402

# Run in a child process: train, and at a given step (after a checkpoint was
# written earlier in the same epoch) say so and hang until killed.
CHILD = r"""
import json, os, sys, time
from lightning.pytorch.callbacks import Callback
from graphsphere.train import fit

class HangAt(Callback):
    def __init__(self, step, marker):
        self.step, self.marker = step, marker
    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            open(self.marker, "w").close()
            time.sleep(300)

cfg, step, marker = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
fit(cfg, callbacks=[HangAt(step, marker)])
"""


def config(out):
    # 64 maps, batches of 8: 8 steps an epoch; last.ckpt every 3 steps. Dropout and batch norm
    # make the test sensitive to the random stream and to the running statistics.
    return {"task": "classification", "output_dir": str(out), "sampling": {"type": "HEALPix", "nside": 4},
            "data": {"name": "synthetic", "n_train": 64, "n_val": 16, "n_test": 0},
            "model": {"type": "SphericalCNN", "channels": [4, 8], "K": 2, "dropout": 0.3},
            "optim": {"lr": 0.01},
            "trainer": {"max_epochs": 2, "batch_size": 8, "checkpoint_every_n_steps": 3, "progress_bar": False,
                        "loggers": ["csv"], "seed": 3}}


def state(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(tmp_path):
    killed = tmp_path / "killed"
    killed.mkdir()
    marker = killed / "HANGING"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(config(killed)), "13", str(marker)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the child never reached step 13"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    # What survived: the step-12 checkpoint, 4 batches into epoch 1 (step 13 is lost).
    ckpt = state(killed / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 12
    assert ckpt["SphereDataModule"] == {"epoch": 1, "batches_done": 4, "n_batches": 8, "samples_per_batch": 8}
    assert not list((killed / "checkpoints").glob(".*.tmp"))

    resumed = fit(config(killed))                       # the same command again
    assert resumed.resumed_from is not None and resumed.global_step == 16

    clean = fit(config(tmp_path / "clean"))
    a, b = state(clean.last_checkpoint)["state_dict"], state(resumed.last_checkpoint)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k].double() - b[k].double()).abs().max()}"
