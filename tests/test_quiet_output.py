"""A training run's output redirected to a file (issue 17, "Done when"): plain lines, no carriage-return
frames, no Lightning hardware inventory, one line per epoch, a short page. The run is the README's
example config for two epochs, in a subprocess whose stdout and stderr are a pipe, not a terminal."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "experiments" / "example_synthetic.yaml"
EPOCHS = 2
MAX_LINES = 40
HARDWARE = ("GPU available", "TPU available", "HPU available", "IPU available", "LOCAL_RANK")


def problems(text: str, epochs: int) -> list[str]:
    """What is wrong with a redirected training log: each finding as one sentence (empty: all good)."""
    found = []
    if "\r" in text:
        found.append(f"{text.count(chr(13))} carriage returns")
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        found.append(f"{len(lines)} lines (at most {MAX_LINES})")
    found += [f"hardware line: {line!r}" for line in lines if any(h in line for h in HARDWARE)]
    epoch_lines = [line for line in lines if re.match(r"epoch \d+/\d+\b", line)]
    numbers = [int(re.match(r"epoch (\d+)/", line).group(1)) for line in epoch_lines]
    if numbers != list(range(1, epochs + 1)):
        found.append(f"epoch lines {numbers}, expected 1..{epochs}")
    return found


def test_the_checker_sees_each_fault():
    good = "model\nepoch 1/2  train_loss 0.5\nepoch 2/2  train_loss 0.3\n{}\n"
    assert problems(good, 2) == []
    assert problems(good.replace("\n", "\r", 1), 2)
    assert problems("GPU available: False, used: False\n" + good, 2)
    assert problems(good + "x\n" * MAX_LINES, 2)
    assert problems(good.replace("epoch 2/2  train_loss 0.3\n", ""), 2)
    assert problems(good + "epoch 2/2  train_loss 0.3\n", 2)


def test_a_redirected_training_run_is_a_short_page_of_plain_lines(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "graphsphere.cli", "train", str(CONFIG), f"trainer.max_epochs={EPOCHS}",
         f"output_dir={tmp_path / 'run'}"],
        cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        timeout=300, check=False)
    text = proc.stdout.decode("utf-8", errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert problems(text, EPOCHS) == [], text
    assert '"test_acc"' in text  # the result itself is on the page


# -- "run i/N, ETA" in every sweep (graphsphere.data.progress.SweepClock) ---------------------------

def test_sweep_clock_says_run_i_of_n_and_the_time_left_per_kind(monkeypatch):
    from graphsphere.data import progress

    now = iter([0.0, 10.0, 130.0, 250.0])            # the clock's start, then the end of each run
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(now))
    clock = progress.SweepClock(["svm", "net", "net"])
    assert clock.tag == "run 1/3"
    # two runs left, one net never seen: each counts as the mean of the runs done (10 s)
    assert clock.finished("svm", 10.0) == "elapsed 10 s, about 20 s left"
    assert clock.tag == "run 2/3"
    assert clock.finished("net", 120.0) == "elapsed 2 min 10 s, about 2 min 00 s left"   # per kind
    assert clock.tag == "run 3/3"
    assert clock.finished("net", 120.0) == "elapsed 4 min 10 s, all done"


def test_the_shapes_sweep_prints_run_i_of_n_with_the_time_left(monkeypatch, capsys, tmp_path):
    """The loop of the shapes runner alone: projection and training mocked, stopped before testing."""
    from graphsphere.experiments.shapes import runner

    class Stop(Exception):
        pass

    def evaluate(*args):
        raise Stop

    monkeypatch.setattr(runner, "_project_all", lambda cfg: {"train": 10})
    monkeypatch.setattr(runner, "_train", lambda cfg, method, protocol, n: {
        "retested": False, "fit_seconds": 1.0, "test_acc_engine": 0.5})
    monkeypatch.setattr(runner, "_evaluate", evaluate)
    cfg = runner.load_config({"output_dir": str(tmp_path / "out"), "methods": ["deepsphere", "sht_cnn"],
                              "data": {"protocols": ["z/SO3", "SO3/SO3"]}})
    with pytest.raises(Stop):
        runner.run(cfg)
    lines = [line for line in capsys.readouterr().out.splitlines() if " done: " in line]
    assert [line.split(" done")[0] for line in lines] == [f"[shapes] run {i}/4" for i in (1, 2, 3, 4)]
    assert all(", about " in line and line.endswith(" left") for line in lines[:3]), lines
    assert lines[3].endswith(", all done")
