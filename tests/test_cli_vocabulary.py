"""One flag vocabulary across the commands: --sampling SPEC, --neighbours N, --cheb-terms K,
--out DIR (default out/<command>), --device; old spellings work one release with a warning."""

import argparse

import pytest

pytest.importorskip("matplotlib")

from graphsphere.cli import build_parser, main  # noqa: E402

#: The old spellings, kept hidden for one release.
DEPRECATED = {"-k", "--k", "--K", "--nside", "--samplings"}
#: Commands whose flags this vocabulary covers (train / evaluate / predict / cosmology / data: elsewhere).
COMMANDS = ["demo", "info", "spectrum", "alignment", "filter", "equivariance", "tune"]


def _subparsers():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("command", COMMANDS)
def test_visible_flags_use_the_one_vocabulary(command):
    p = _subparsers()[command]
    visible = {s for a in p._actions if a.help != argparse.SUPPRESS for s in a.option_strings}
    hidden = {s for a in p._actions if a.help == argparse.SUPPRESS for s in a.option_strings}
    assert not visible & DEPRECATED, visible & DEPRECATED
    assert hidden <= DEPRECATED | {"--debug"}          # --debug: the top-level flag, accepted after the command
    if command != "info":
        out = next(a for a in p._actions if "--out" in a.option_strings)
        assert out.default == f"out/{command}"
    for flag in ("--sampling", "--neighbours"):
        if command in ("demo", "spectrum", "alignment", "filter", "tune"):
            assert flag in visible
    assert ("--cheb-terms" in visible) == (command == "filter")


def test_demo_takes_samplings_and_neighbours_and_writes_under_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--sampling", "healpix:4", "gl:6", "--sampling", "icosahedral:1",
                 "--neighbours", "6"]) == 0
    table = (tmp_path / "out" / "demo" / "graphs.md").read_text().splitlines()
    assert [row.split(" | ")[0].lstrip("| ") for row in table[2:]] == [
        "HEALPix(nside=4, NESTED, full sky)", "GaussLegendre(nlat=6, nlon=12)", "Icosahedral(level=1)"]
    assert (tmp_path / "out" / "demo" / "filtered_maps.png").stat().st_size > 20_000
    assert "warning" not in capsys.readouterr().err


def test_old_spellings_work_with_a_deprecation_line(tmp_path, capsys):
    assert main(["demo", "--sampling", "healpix:4", "-k", "6", "--out", str(tmp_path / "a")]) == 0
    assert main(["demo", "--sampling", "healpix:4", "--neighbours", "6", "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "-k is deprecated" in err and "use --neighbours" in err
    # the same graph either way (the build-time column aside)
    rows = [(tmp_path / d / "graphs.md").read_text().splitlines()[2].split(" | ")[:-1] for d in "ab"]
    assert rows[0] == rows[1] and rows[0][3] == "6-7"

    assert main(["filter", "--nside", "8", "--K", "5", "--fwhm", "30", "--out", str(tmp_path / "f.png")]) == 0
    out, err = capsys.readouterr()
    assert "--nside is deprecated" in err and "--K is deprecated" in err and "--out now names a folder" in err
    assert "5 Chebyshev terms" in out and (tmp_path / "f.png").exists()
    assert main(["filter", "--sampling", "healpix:8", "--cheb-terms", "5", "--fwhm", "30", "--out", str(tmp_path)]) == 0
    assert "5 Chebyshev terms" in capsys.readouterr().out and (tmp_path / "filter.png").exists()


def test_user_errors_take_the_one_error_path(capsys):
    assert main(["spectrum", "--sampling", "cube:3"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown sampling 'cube'")
    assert main(["filter", "--sampling", "gl:8"]) == 2
    assert "needs a full-sky HEALPix sampling" in capsys.readouterr().err
    assert main(["alignment", "--sampling", "gl:8", "--kernel-width", "published"]) == 2
    assert "published widths are HEALPix's" in capsys.readouterr().err


def test_device_option():
    from graphsphere.commands.options import add_device, resolve_device

    p = argparse.ArgumentParser()
    add_device(p)
    assert p.parse_args([]).device == "auto"
    with pytest.raises(SystemExit):
        p.parse_args(["--device", "gpu"])
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            resolve_device("cuda")
