"""Reliability, continued: divergence with Adam (finite losses of 1e24), config.yaml beside the weights
after an interrupted fresh start, the shapes projection cache's checksum, two real runs on one output_dir,
a crafted checkpoint that names importable code, and kill -9 during data generation.
Each case is a row of docs/reliability.md."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("lightning")

from lightning.pytorch.callbacks import Callback  # noqa: E402

from graphsphere.cli import main  # noqa: E402
from graphsphere.config import ConfigError  # noqa: E402
from graphsphere.train import evaluate, fit, predict  # noqa: E402
from graphsphere.train.callbacks import TrainingDiverged  # noqa: E402
from graphsphere.train.engine import RunLockedError  # noqa: E402


def tiny(out, lr=0.01, **trainer):
    return {"task": "classification", "output_dir": str(out), "sampling": {"type": "HEALPix", "nside": 4},
            "data": {"name": "synthetic", "n_train": 32, "n_val": 8, "n_test": 8},
            "model": {"type": "SphericalCNN", "channels": [4], "K": 2}, "optim": {"lr": lr},
            "trainer": {"max_epochs": 1, "batch_size": 8, "progress_bar": False, "loggers": ["csv"],
                        "checkpoint_every_n_steps": 0, **trainer}}


def checkpoints(folder):
    return sorted(folder.rglob("*.ckpt"))


def weights(path):
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return [v for v in sd.values() if v.is_floating_point()]


# -- divergence --------------------------------------------------------------------------------------
def test_adam_at_a_huge_learning_rate_stops_and_keeps_no_diverged_weights(tmp_path):
    # Adam's steps are ~lr whatever the gradient: weights of 1e12 after step 1, a finite loss of ~1e24 at
    # step 2 (no NaN anywhere); a checkpoint every step would have kept the 1e12 weights of step 1
    cfg = tiny(tmp_path / "d", lr=1e12, max_epochs=2, checkpoint_every_n_steps=1)
    with pytest.raises(TrainingDiverged, match=r"^the loss diverged at step 2 \(loss \S+, over "
                       r"trainer.divergence_factor=1e\+06 times the first loss \S+\): lower the learning rate "
                       r"\(optim.lr=1e\+12 now\)") as e:
        fit(cfg)
    for p in checkpoints(tmp_path / "d"):                       # none left; any that were would be sane
        assert all(torch.isfinite(w).all() and w.abs().max() < 1e3 for w in weights(p)), p
    assert "; removed last.ckpt (written from the diverged weights)" in str(e.value)


def test_a_nan_loss_stops_the_run_also_without_the_factor(tmp_path):
    # SGD at 1e12 now trips the factor at step 2; without it the loss reaches NaN at step 3
    cfg = tiny(tmp_path / "d", max_epochs=2, checkpoint_every_n_steps=1, divergence_factor=None)
    cfg["optim"] = {"lr": 1e12, "name": "sgd", "momentum": 0.0}
    with pytest.raises(TrainingDiverged, match=r"^the loss diverged at step 3 \(loss nan\): lower the learning "
                       r"rate \(optim.lr=1e\+12 now\)") as e:
        fit(cfg)
    assert "removed last.ckpt" in str(e.value)             # the weights of step 2 gave the NaN
    for p in checkpoints(tmp_path / "d"):
        assert torch.load(p, weights_only=True)["global_step"] < 2
        assert all(torch.isfinite(w).all() for w in weights(p)), p


def test_non_finite_weights_after_a_step_stop_the_run_before_they_are_saved(tmp_path):
    class InfiniteGradient(Callback):       # an overflowed gradient: Adam then writes NaN into the weight
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if trainer.global_step == 2:
                next(pl_module.parameters()).grad.fill_(float("inf"))

    cfg = tiny(tmp_path / "d", max_epochs=2, checkpoint_every_n_steps=1)
    with pytest.raises(TrainingDiverged, match=r"^the loss diverged at step 3 \(model\.\S+ is not finite after "
                       r"the optimiser step\): lower the learning rate"):
        fit(cfg, callbacks=[InfiniteGradient()])
    kept = checkpoints(tmp_path / "d")
    assert kept                                                  # the healthy step-2 checkpoint stays
    for p in kept:
        assert torch.load(p, weights_only=True)["global_step"] <= 2
        assert all(torch.isfinite(w).all() for w in weights(p)), p


def test_an_ordinary_run_is_not_stopped_and_the_first_loss_is_kept_for_resuming(tmp_path):
    r = fit(tiny(tmp_path / "ok", max_epochs=3))
    assert r.epochs == 3 and r.global_step == 12
    state = torch.load(r.last_checkpoint, weights_only=True)["callbacks"]
    first = [v["first_loss"] for k, v in state.items() if "DivergenceGuard" in k]
    assert len(first) == 1 and 0.3 < first[0] < 3                  # cross-entropy of 2 classes, untrained


def test_divergence_factor_is_validated_and_null_turns_the_check_off(tmp_path):
    for bad in ("1", "0.5", "-3", ".inf"):
        with pytest.raises(ConfigError, match="divergence_factor"):
            fit(tiny(tmp_path / "never"), [f"trainer.divergence_factor={bad}"])
    # off: Adam at 1e12 runs to the end, as before the check (the losses stay finite)
    r = fit(tiny(tmp_path / "off", lr=1e12, divergence_factor=None))
    assert r.epochs == 1 and r.metrics["val"]["val_loss"] > 1e12


def test_adam_divergence_on_the_command_line_is_one_line(tmp_path):
    from pathlib import Path

    exe = Path(sys.executable).with_name("graphsphere")
    if not exe.exists():
        pytest.skip("the graphsphere command is not installed beside this Python")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny(tmp_path / "d", lr=1e12, max_epochs=2)))
    proc = subprocess.run([str(exe), "train", str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the loss diverged at step 2 ("), proc.stderr
    assert "lower the learning rate (optim.lr=1e+12 now)" in lines[0]
    assert not list((tmp_path / "d").rglob("*.ckpt"))


# -- config.yaml and metrics.json describe the weights beside them ------------------------------------
class Interrupt(Callback):
    def on_train_start(self, trainer, pl_module):
        raise RuntimeError("interrupted before the first checkpoint")


def _lr_of_config(path):
    return yaml.safe_load(path.read_text())["optim"]["lr"]


def _lr_of_checkpoint(path):
    return torch.load(path, weights_only=True)["graphsphere"]["config"]["optim"]["lr"]


def test_an_interrupted_fresh_start_leaves_config_and_weights_of_one_run(tmp_path):
    out = tmp_path / "run"
    fit(tiny(out, lr=0.01))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(tiny(out, lr=0.02, resume=False), callbacks=[Interrupt()])
    # whatever is beside config.yaml was trained with the settings it states
    assert _lr_of_config(out / "config.yaml") == 0.02
    for p in checkpoints(out / "checkpoints") if (out / "checkpoints").exists() else []:
        assert _lr_of_checkpoint(p) == 0.02, p
    assert not (out / "metrics.json").exists()
    # the previous run is kept whole, aside
    (aside,) = (out / "replaced").iterdir()
    assert _lr_of_config(aside / "config.yaml") == 0.01
    assert {p.name for p in checkpoints(aside)} == {"last.ckpt", "best.ckpt"}
    assert all(_lr_of_checkpoint(p) == 0.01 for p in checkpoints(aside))
    assert json.loads((aside / "metrics.json").read_text())["epochs"] == 1
    # and the fresh run, run to its end, describes its own weights
    r = fit(tiny(out, lr=0.02, resume=False))
    assert _lr_of_checkpoint(r.last_checkpoint) == _lr_of_config(out / "config.yaml") == 0.02
    assert json.loads((out / "metrics.json").read_text())["resumed_from"] is None


def test_an_interrupted_resume_leaves_no_stale_metrics(tmp_path):
    out = tmp_path / "run"
    fit(tiny(out))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(tiny(out, max_epochs=2), callbacks=[Interrupt()])
    assert not (out / "metrics.json").exists() and (out / "checkpoints" / "last.ckpt").exists()
    assert not (out / "replaced").exists()                         # a resume moves nothing


# -- the shapes projection cache ------------------------------------------------------------------------
def test_a_damaged_cached_projection_is_projected_again_not_used(tmp_path, monkeypatch):
    trimesh = pytest.importorskip("trimesh")
    import graphsphere as gs
    from graphsphere.data import shapes

    root = tmp_path / "meshes"
    root.mkdir()
    trimesh.creation.box(extents=(1, 2, 3)).export(root / "box.off")
    trimesh.creation.icosphere(2).export(root / "ball.stl")
    kw = dict(root=root, categories={"box.off": "box", "ball.stl": "ball"}, max_translation=0.1)
    s8 = gs.sampling.HEALPix(nside=8)
    pairs = [(0, 0), (1, 0), (1, 1)]
    fresh = shapes.ShapeCollection(s8, cache_dir=False, **kw).samples(pairs, progress=False)
    cached = shapes.ShapeCollection(s8, cache_dir=tmp_path / "cache", **kw)
    np.testing.assert_array_equal(cached.samples(pairs, progress=False), fresh)
    files = [cached.cache_path(*p) for p in pairs]
    good = files[0].read_bytes()
    data = bytearray(good)
    middle = len(data) // 2
    data[middle: middle + 64] = bytes(b ^ 0x5A for b in data[middle: middle + 64])   # same size, other bytes
    files[0].write_bytes(bytes(data))
    files[1].write_bytes(files[1].read_bytes()[:-100])                                # truncated
    with pytest.warns(UserWarning, match=r"2 cached projection\(s\) fail their checksum"):
        again = cached.samples(pairs, progress=False)
    np.testing.assert_array_equal(again, fresh)
    assert files[0].read_bytes() == good                          # rebuilt, byte for byte
    np.testing.assert_array_equal(np.load(files[1]), fresh[1])    # still a plain .npy for np.load
    monkeypatch.setattr(shapes, "_project_task", lambda *a: pytest.fail("projected although cached"))
    np.testing.assert_array_equal(cached.samples(pairs, progress=False), fresh)


# -- two real runs on one output_dir --------------------------------------------------------------------
def test_a_second_real_run_is_refused_naming_the_pid_of_the_first(tmp_path):
    out, started, stop = tmp_path / "busy", tmp_path / "started", tmp_path / "stop"
    (tmp_path / "cfg.json").write_text(json.dumps(tiny(out)))
    child = textwrap.dedent(f"""
        import json, pathlib, time
        from lightning.pytorch.callbacks import Callback
        from graphsphere.train import fit

        class Hold(Callback):                     # a slow run: holds the output_dir until told to go on
            def on_train_start(self, trainer, pl_module):
                pathlib.Path({str(started)!r}).write_text("x")
                end = time.time() + 60
                while not pathlib.Path({str(stop)!r}).exists() and time.time() < end:
                    time.sleep(0.05)

        fit(json.loads(pathlib.Path({str(tmp_path / 'cfg.json')!r}).read_text()), callbacks=[Hold()])
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.time() + 60
        while not started.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < end, "the first run did not start"
            time.sleep(0.05)
        with pytest.raises(RunLockedError, match=rf"in use by another run \(PID {proc.pid}\)"):
            fit(tiny(out))
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny(out)))
        assert main(["train", str(tmp_path / "c.yaml")]) == 2
    finally:
        stop.write_text("go")
        assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()
    assert fit(tiny(out, max_epochs=2)).resumed_from is not None       # the first run's work is intact


# -- a crafted checkpoint naming importable code ----------------------------------------------------------
def test_a_crafted_checkpoint_runs_nothing_it_names(tmp_path, monkeypatch):
    run = fit(tiny(tmp_path / "run"))
    imported, called = tmp_path / "IMPORTED", tmp_path / "CALLED"
    (tmp_path / "evil_model.py").write_text(textwrap.dedent(f"""
        import pathlib
        pathlib.Path({str(imported)!r}).write_text("imported")

        def build(*args, **kwargs):
            pathlib.Path({str(called)!r}).write_text("called")
            raise RuntimeError("evil code ran")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_model", raising=False)
    ckpt = torch.load(run.best_checkpoint, map_location="cpu", weights_only=True)
    ckpt["graphsphere"]["config"]["model"] = {"type": "evil_model:build"}
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    for call in (lambda **k: evaluate(tmp_path / "crafted.ckpt", **k),
                 lambda **k: predict(tmp_path / "crafted.ckpt", np.zeros((1, 192), np.float32), **k)):
        with pytest.raises(ConfigError, match="code outside graphsphere.*trust_code"):
            call()
        assert not imported.exists() and not called.exists() and "evil_model" not in sys.modules
    # the markers do work: trusted, the same checkpoint imports and calls the code
    with pytest.raises(Exception, match="evil code ran"):
        evaluate(tmp_path / "crafted.ckpt", trust_code=True)
    assert imported.exists() and called.exists()


# -- kill -9 during data generation ------------------------------------------------------------------------
KILLER = """
import io, os, signal, sys
import graphsphere.data.cosmology as cosmo
import graphsphere.files as files

# SIGKILL at the 4th cache file, through the package's own writing code: half-way through its bytes, or
# after it is in place but before its checksum is written
calls = 0
save, digest = cosmo._atomic_save, files.sha256_file


def killing_save(path, write):
    global calls
    calls += 1
    if calls == 4 and sys.argv[1] == "mid-write":
        def half(f):
            buf = io.BytesIO()
            write(buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return save(path, half)
    return save(path, write)


def killing_digest(path, *a):
    if calls == 4 and sys.argv[1] == "before-checksum":
        os.kill(os.getpid(), signal.SIGKILL)
    return digest(path, *a)


cosmo._atomic_save, files.sha256_file = killing_save, killing_digest
cosmo.generate_maps(nside=32, n_maps_per_class=3, cache_dir=sys.argv[2], progress=False)
"""


@pytest.mark.parametrize("when", ["mid-write", "before-checksum"])
def test_kill_9_during_data_generation_then_again_equals_an_uninterrupted_generation(tmp_path, when):
    pytest.importorskip("pyccl")
    from graphsphere.data.cosmology import make_dataset

    killed, fresh = tmp_path / "killed", tmp_path / "fresh"
    proc = subprocess.run([sys.executable, "-c", KILLER, when, str(killed)], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    maps = lambda d: {p.relative_to(d): p for p in d.rglob("map-*.npy")}  # noqa: E731
    assert 0 < len(maps(killed)) <= 6                              # part-way: some maps there, not all verified
    kw = dict(nside=32, n_maps_per_class=3, order=1, progress=False)
    again = make_dataset(cache_dir=killed, **kw)
    reference = make_dataset(cache_dir=fresh, **kw)
    np.testing.assert_array_equal(again.x, reference.x)
    np.testing.assert_array_equal(again.y, reference.y)
    a, b = maps(killed), maps(fresh)
    assert a.keys() == b.keys() and len(a) == 6
    assert all(a[k].read_bytes() == b[k].read_bytes() for k in a)
