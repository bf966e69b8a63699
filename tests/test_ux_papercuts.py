"""Papercuts of a new user's first hour (issue 17): sampling specs in the docs that parse, maps with
missing pixels still checked for their ordering, overrides anywhere after the config, a sub-command's
own usage on its mistakes, one word for deprecations."""

import difflib
import re
from pathlib import Path

import numpy as np
import pytest

from graphsphere.cli import build_parser, main
from graphsphere.sampling import parse_spec, sampling_names

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: NAME:ARGS where ARGS starts with a number or key=value, as parse_spec reads them
SPEC = re.compile(r"(?<![\w/.-])([A-Za-z][\w-]*):((?:\d|[a-z_]+=)[^\s`|)'\"\]]*)")


def _looks_like_a_sampling(name: str) -> bool:
    names = [n.lower() for n in sampling_names()]
    low = name.lower()
    return (low in names or any(n.startswith(low) for n in names if len(low) >= 3)
            or bool(difflib.get_close_matches(low, names, n=1, cutoff=0.7)))


def _specs_in_docs() -> list[tuple[str, int, str]]:
    found = []
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in SPEC.finditer(line):
                if _looks_like_a_sampling(m.group(1)):
                    found.append((str(path.relative_to(ROOT)), number, f"{m.group(1)}:{m.group(2)}".rstrip(".,;:")))
    return found


def test_every_sampling_spec_in_the_readme_and_docs_parses():
    found = _specs_in_docs()
    specs = {spec for _, _, spec in found}
    # the flags table of getting_started.md and the README's table are among them
    assert {"healpix:64,nest=false", "equiangular:32x64", "equiangular-soft:32", "gl:48", "icosahedral:5",
            "healpix:32", "gl:64x128"} <= specs, specs
    bad = []
    for where, line, spec in found:
        try:
            parse_spec(spec)
        except ValueError as e:
            bad.append(f"{where}:{line}: {spec}: {e}")
    assert not bad, "\n".join(bad)


def test_the_spec_finder_sees_a_bad_spec():
    assert _looks_like_a_sampling("gauss") and _looks_like_a_sampling("healpix")
    assert not _looks_like_a_sampling("k8") and not _looks_like_a_sampling("gpu")
    with pytest.raises(ValueError, match="unknown sampling 'gauss'"):
        parse_spec("gauss:64x128")


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # healpy 1.20's colormap calls, matplotlib 3.11
def test_mollview_checks_the_ordering_of_a_map_with_missing_pixels():
    pytest.importorskip("matplotlib")
    import healpy as hp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import graphsphere as gs
    from graphsphere.plot.maps import mollview

    x, y, z = hp.pix2vec(16, np.arange(12 * 16**2), nest=False)
    ring = x + 2 * y + z**2                          # a smooth map in RING order
    ring[5] = np.nan
    ring[100:140] = hp.UNSEEN
    with pytest.raises(ValueError) as by_check_map:
        gs.sampling.HEALPix(nside=16).check_map(ring)
    try:
        with pytest.raises(ValueError, match="healpy.reorder") as by_mollview:
            mollview(ring, nest=True, colorbar=False)
        assert str(by_check_map.value) in str(by_mollview.value)
        mollview(ring, nest=False, colorbar=False)   # the right order draws, missing pixels grey
        mollview(ring, nest=True, check_order=False, colorbar=False)
    finally:
        plt.close("all")


@pytest.mark.parametrize("argv, overrides", [
    (["train", "c.yaml", "a=1", "--verbose", "b=2"], ["a=1", "b=2"]),
    (["train", "c.yaml", "--verbose", "a=1", "--device", "cpu", "b=2"], ["a=1", "b=2"]),
    (["train", "--verbose", "c.yaml", "a=1"], ["a=1"]),
    (["evaluate", "x.ckpt", "a=1", "--split", "val", "b=2"], ["a=1", "b=2"]),
    (["cosmology", "c.yaml", "a=1"], ["a=1"]),
])
def test_overrides_may_follow_flags(argv, overrides):
    args = build_parser().parse_args(argv)
    assert args.overrides == overrides


def test_overrides_after_a_flag_reach_the_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "missing.yaml", "trainer.max_epochs=1", "--verbose", "optim.lr=0.1"]) == 2
    assert capsys.readouterr().err.startswith("error: config file not found")


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_a_missing_config_is_said_with_the_usage_of_train(capsys):
    err = _usage_error(["train"], capsys)
    assert err.startswith("usage: graphsphere train ")
    assert "graphsphere train: error: train needs a CONFIG file" in err
    assert "SECTION.FIELD=VALUE" not in err.splitlines()[-1]       # overrides are optional
    err = _usage_error(["evaluate"], capsys)
    assert err.startswith("usage: graphsphere evaluate ") and "evaluate needs a CHECKPOINT file" in err


@pytest.mark.parametrize("argv, command", [(["demo", "--bogus"], "demo"), (["cosmology", "--bogus"], "cosmology"),
                                           (["train", "c.yaml", "--bogus", "a=1"], "train"),
                                           (["data", "list", "--bogus"], "data list")])
def test_a_bad_flag_shows_the_usage_of_its_command(argv, command, capsys):
    err = _usage_error(argv, capsys)
    assert err.startswith(f"usage: graphsphere {command} ")
    assert err.splitlines()[-1] == f"graphsphere {command}: error: unrecognized arguments: --bogus"


def test_debug_after_the_command(capsys):
    assert build_parser().parse_args(["train", "c.yaml", "--debug"]).debug is True
    assert build_parser().parse_args(["--debug", "train", "c.yaml"]).debug is True
    assert build_parser().parse_args(["train", "c.yaml"]).debug is False


def test_set_is_deprecated_with_a_warning_as_the_other_old_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "missing.ckpt", "--set", "data.noise=0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("warning: --set is deprecated and will be removed in the next release")
    assert "note:" not in err and "error: checkpoint not found" in err
