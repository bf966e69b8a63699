"""Reliability: damaged files, runs that are not what they claim, divergence, bad input from the API
and the command line. Each case of docs/reliability.md is a test here (or named there where it lives)."""

import fcntl
import os

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

import graphsphere as gs  # noqa: E402
from graphsphere.cli import main  # noqa: E402
from graphsphere.config import ConfigError  # noqa: E402
from graphsphere.train import evaluate, fit, predict  # noqa: E402
from graphsphere.train.callbacks import TrainingDiverged  # noqa: E402
from graphsphere.train.checkpoint import CheckpointError, read_checkpoint  # noqa: E402
from graphsphere.train.engine import RunLockedError  # noqa: E402


def tiny(out, **trainer):
    return {"task": "classification", "output_dir": str(out), "sampling": {"type": "HEALPix", "nside": 4},
            "data": {"name": "synthetic", "n_train": 32, "n_val": 8, "n_test": 8},
            "model": {"type": "SphericalCNN", "channels": [4], "K": 2}, "optim": {"lr": 0.01},
            "trainer": {"max_epochs": 1, "batch_size": 8, "progress_bar": False, "loggers": ["csv"],
                        "checkpoint_every_n_steps": 0, **trainer}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return fit(tiny(tmp_path_factory.mktemp("run")))


# -- damaged checkpoints ---------------------------------------------------------------------------
def test_a_changed_tensor_inside_a_checkpoint_is_caught(run, tmp_path):
    ckpt = torch.load(run.best_checkpoint, weights_only=True)
    assert "graphsphere_digest" in ckpt
    key = next(k for k in ckpt["state_dict"] if k.endswith("weight"))
    ckpt["state_dict"][key].view(-1)[0] += 1.0                   # one weight changed, nothing else
    torch.save(ckpt, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="bad.ckpt is damaged.*best.ckpt.*resume=false"):
        evaluate(tmp_path / "bad.ckpt")


def test_overwritten_bytes_empty_and_truncated_files_name_the_file_and_the_fix(run, tmp_path):
    data = bytearray(run.best_checkpoint.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    (tmp_path / "zeroed.ckpt").write_bytes(bytes(data))
    (tmp_path / "empty.ckpt").write_bytes(b"")
    (tmp_path / "short.ckpt").write_bytes(run.best_checkpoint.read_bytes()[:1000])
    for name in ("zeroed", "empty", "short"):
        with pytest.raises(CheckpointError, match=rf"{name}.ckpt .*(best.ckpt|resume=false)"):
            read_checkpoint(tmp_path / f"{name}.ckpt")
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path)


def test_a_damaged_last_checkpoint_stops_the_resume_with_a_way_out(tmp_path):
    r = fit(tiny(tmp_path / "r"))
    r.last_checkpoint.write_bytes(b"")                         # killed while the disk was full
    with pytest.raises(CheckpointError, match="last.ckpt is empty.*resume=false"):
        fit(tiny(tmp_path / "r", max_epochs=2))
    again = fit(tiny(tmp_path / "r", max_epochs=1, resume=False))   # the way out works
    assert again.resumed_from is None and again.last_checkpoint.stat().st_size > 0


# -- runs are what they claim ----------------------------------------------------------------------
def test_resuming_with_other_data_optimiser_or_seed_is_refused(tmp_path):
    fit(tiny(tmp_path / "r"))
    for override, what in (("optim.lr=0.5", "optim.lr: 0.01 there, 0.5 here"),
                           ("trainer.seed=7", "trainer.seed: 0 there, 7 here"),
                           ("data.noise=0.3", "data.noise: 0.1 there, 0.3 here")):
        with pytest.raises(CheckpointError, match=f"(?s)trained with other settings:.*{what}"):
            fit(tiny(tmp_path / "r", max_epochs=2), [override])
    # how a run runs may change: more epochs resume
    assert fit(tiny(tmp_path / "r", max_epochs=2), ["trainer.loggers=[csv]"]).resumed_from is not None


def test_a_second_run_in_the_same_output_dir_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242")
    try:
        with pytest.raises(RunLockedError, match="in use by another run \\(PID 4242\\)"):
            fit(tiny(out))
    finally:
        os.close(fd)
    assert fit(tiny(out)).epochs == 1                           # released: runs


def test_outputs_replace_symlinks_instead_of_writing_through_them(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "metrics.json"):
        (out / name).symlink_to(outside)
    fit(tiny(out))
    assert outside.read_text() == "keep me"
    for name in ("config.yaml", "metrics.json"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0


def test_output_dir_under_a_file_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        fit(tiny(tmp_path / "file" / "run"))


# -- divergence --------------------------------------------------------------------------------------
def test_divergence_stops_with_the_learning_rate_named(tmp_path):
    cfg = tiny(tmp_path / "d", max_epochs=3)
    cfg["optim"] = {"lr": 1e12, "name": "sgd", "momentum": 0.0}
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        fit(cfg)
    # nothing non-finite was saved
    for p in (tmp_path / "d" / "checkpoints").glob("*.ckpt"):
        sd = torch.load(p, weights_only=True)["state_dict"]
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


def test_divergence_on_the_command_line_is_one_line(tmp_path, capsys):
    import yaml

    cfg = tiny(tmp_path / "d", max_epochs=3)
    cfg["optim"] = {"lr": 1e12, "name": "sgd", "momentum": 0.0}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "lower the learning rate" in err[-1] and "Traceback" not in "\n".join(err)


# -- bad input -----------------------------------------------------------------------------------------
def _npy(tmp_path, labels):
    x = np.random.default_rng(0).standard_normal((len(labels), 192)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(labels))
    cfg = tiny(tmp_path / "run")
    cfg["data"] = {"name": "npy", "x": str(tmp_path / "x.npy"), "y": str(tmp_path / "y.npy"), "check_order": False}
    return cfg


def test_stray_and_negative_labels_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"no sample of classes \[2, 3, 4\].*num_classes: 6"):
        fit(_npy(tmp_path, [0, 1] * 10 + [5]))
    with pytest.raises(ValueError, match="label -1 is negative"):
        fit(_npy(tmp_path, [0, 1] * 10 + [-1]))


def test_bad_hyperparameters_are_config_errors(tmp_path):
    for override, what in (("optim.lr=.inf", "optim.lr = inf"), ("optim.weight_decay=-1", "optim.weight_decay = -1"),
                           ("model.channels=abc", "model"), ("model.K=0", "K must be a positive integer")):
        with pytest.raises(ConfigError, match=what):
            fit(tiny(tmp_path / "never"), [override])
        assert not (tmp_path / "never").exists()               # nothing written for a bad config


def test_sampling_mistakes_are_clear():
    with pytest.raises(ValueError, match="nside must be an integer power of two.*got None"):
        gs.sampling.HEALPix(nside=None)
    with pytest.raises(ValueError, match="boolean mask.*flatnonzero"):
        gs.sampling.HEALPix(nside=2, indices=np.ones(48, bool))


def test_check_map_still_checks_maps_with_missing_pixels():
    import healpy as hp

    np.random.seed(0)
    m_ring = hp.synfast(1 / (1 + np.arange(48.0)) ** 2, 16)             # smooth, RING
    m_ring[:100] = np.nan
    m_ring[200:220] = hp.UNSEEN
    with pytest.raises(ValueError, match="looks RING-ordered"):
        gs.sampling.HEALPix(nside=16).check_map(m_ring)


def test_pixel_order_of_a_partial_sky_does_not_change_the_model(tmp_path):
    ids = np.arange(192, 384)                                          # two base pixels at nside 8
    perm = np.random.default_rng(1).permutation(ids.size)
    torch.manual_seed(0)
    a = gs.models.SphericalCNN(gs.sampling.HEALPix(8, indices=ids), 1, 3, channels=(4,), K=3,
                               pool="avg").eval()
    torch.manual_seed(0)
    # the same pixels listed in another order: the graph is built in pixel-id order and permuted
    b = gs.models.SphericalUNet(gs.sampling.HEALPix(8, indices=ids[perm]), 1, 2, channels=(4, 4), K=3).eval()
    ga, gb = (m.operators["0"].operator for m in (a, b))
    A = torch.sparse_csr_tensor(ga.indptr.long(), ga.indices.long(), ga.values, (192, 192)).to_dense()
    B = torch.sparse_csr_tensor(gb.indptr.long(), gb.indices.long(), gb.values, (192, 192)).to_dense()
    p = torch.from_numpy(perm)
    torch.testing.assert_close(B, A[p][:, p], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("argv, message", [
    (["predict", "{ckpt}", "{x}", "--out", "{out}", "--device", "bogus"], "device"),
    (["train", "{dir}"], "is a folder"),
    (["evaluate", "{dir}"], "is a folder"),
    (["train", "{cfg}", "model.channels=[a]"], "channels"),
])
def test_command_line_mistakes_are_one_line(run, tmp_path, capsys, argv, message):
    import yaml

    np.save(tmp_path / "x.npy", np.zeros((2, 192), np.float32))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny(tmp_path / "o")))
    values = {"ckpt": str(run.best_checkpoint), "x": str(tmp_path / "x.npy"), "out": str(tmp_path / "p.npy"),
              "dir": str(tmp_path), "cfg": str(tmp_path / "c.yaml")}
    assert main([a.format(**values) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_cuda_without_a_gpu_is_a_clear_error(run):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA device"):
        predict(run.best_checkpoint, np.zeros((1, 192), np.float32), device="cuda")


def test_a_damaged_cached_map_is_made_again_not_used(tmp_path):
    pytest.importorskip("pyccl")
    from graphsphere.data.cosmology import make_dataset
    from graphsphere.files import is_verified

    first = make_dataset(nside=16, n_maps_per_class=1, order=1, cache_dir=tmp_path, progress=False)
    maps = sorted(tmp_path.rglob("map-*.npy"))
    assert len(maps) == 2 and all(is_verified(p) for p in maps)
    data = bytearray(maps[0].read_bytes())
    data[200:400] = bytes(200)                                   # zeroed values inside the array
    maps[0].write_bytes(bytes(data))
    maps[1].write_bytes(maps[1].read_bytes()[:100])               # truncated
    again = make_dataset(nside=16, n_maps_per_class=1, order=1, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.x, first.x)
    assert all(is_verified(p) for p in maps)
