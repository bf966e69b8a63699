"""graphsphere.data.sources: Debian-packaged data sets fetched, verified and cached atomically.

Most tests build a small fake .deb here (an ar archive of control.tar.xz and data.tar.xz written
by the test), so they run offline; one fetches the real r-cran-fields package when apt-get exists.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tarfile
import threading
import time
from pathlib import Path

import pytest

from graphsphere.commands import data as data_command
from graphsphere.data import sources
from graphsphere.data.sources import DataSource, DataUnavailableError, DataVerificationError

FILES = {"a.txt": b"alpha\n", "sub/b.bin": bytes(range(256)) * 40}


def _tar_bytes(files: dict[str, bytes], compression: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}" if compression else "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    """An ar archive as dpkg writes it: global header, 60-byte member headers, 2-byte alignment."""
    out = [b"!<arch>\n"]
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        assert len(header) == 60
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def make_deb(path: Path, data_files: dict[str, bytes], version: str = "1.0-1", compression: str = "xz",
             ar_name: str | None = None) -> Path:
    control = _tar_bytes({"./control": f"Package: fake-data\nVersion: {version}\n".encode()}, "xz")
    data = _tar_bytes({f"./{k}": v for k, v in data_files.items()}, compression)
    suffix = {"xz": ".xz", "gz": ".gz", "": ""}[compression]
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control),
                          (ar_name or f"data.tar{suffix}", data)]))
    return path


def declare(files: dict[str, bytes], name: str = "fake", inner: str | None = None,
            versions=("1.0-1",)) -> DataSource:
    return DataSource(
        name=name, package="fake-data", source_package="fake", versions=versions, architecture="all",
        description="test data", licence="CC0-1.0", prefix="data/" if inner else "usr/share/fake/",
        files=tuple((k, len(v), hashlib.sha256(v).hexdigest()) for k, v in files.items()), inner_archive=inner)


def package_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The files as they sit in the fake package, plus decoys that must not be taken."""
    out = {f"usr/share/fake/{k}": v for k, v in files.items()}
    out["usr/share/fake/not-declared.txt"] = b"decoy"
    out["usr/share/other/a.txt"] = b"decoy: same base name, other folder"
    return out


def cli(argv: list[str]) -> int:
    """``graphsphere data ...`` through the command module's own parser (as graphsphere.cli registers it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="graphsphere")
    parser.add_argument("--debug", action="store_true")
    data_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("GRAPHSPHERE_DATA", str(root))
    return root


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".partial-" in p.name or ".old-" in p.name)


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAPHSPHERE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("GRAPHSPHERE_CACHE", str(tmp_path / "c"))
    assert sources.data_dir() == tmp_path / "d"
    monkeypatch.delenv("GRAPHSPHERE_DATA")
    assert sources.data_dir() == tmp_path / "c" / "data"
    monkeypatch.delenv("GRAPHSPHERE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert sources.data_dir() == tmp_path / "home" / ".cache" / "graphsphere" / "data"


@pytest.mark.parametrize("compression", ["xz", "gz", ""])
def test_fetch_from_deb_keeps_declared_files_only(tmp_path, cache, compression):
    src = declare(FILES)
    deb = make_deb(tmp_path / "fake.deb", package_files(FILES), compression=compression)
    folder = sources.fetch(src, deb=deb)
    assert folder == cache / "fake"
    kept = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert kept == ["a.txt", "sub/b.bin"]
    assert (folder / "a.txt").read_bytes() == FILES["a.txt"]
    assert (folder / "sub/b.bin").read_bytes() == FILES["sub/b.bin"]
    assert leftovers(cache) == []
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755  # readable by others in a shared cache
    assert sources.verify(src) == folder
    assert sources.deb_version(deb) == "1.0-1"


def test_inner_archive(tmp_path):
    """As libcgal-demo: the files sit in a tarball inside the package's data."""
    inner = _tar_bytes({"data/meshes/m.off": FILES["a.txt"], "data/points_3/p.ply": FILES["sub/b.bin"],
                        "data/images/skip.inr": b"not declared"}, "gz")
    files = {"meshes/m.off": FILES["a.txt"], "points_3/p.ply": FILES["sub/b.bin"]}
    src = declare(files, inner="usr/share/doc/fake/data.tar.gz")
    deb = make_deb(tmp_path / "fake.deb", {"usr/share/doc/fake/data.tar.gz": inner})
    folder = sources.fetch(src, deb=deb)
    kept = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert kept == ["meshes/m.off", "points_3/p.ply"]  # the inner tarball itself is not kept


def test_checksum_mismatch_is_a_clear_error_and_leaves_nothing(tmp_path, cache):
    src = declare(FILES)
    bad = dict(FILES, **{"a.txt": b"alphA\n"})  # same size, other content: only the hash can tell
    deb = make_deb(tmp_path / "fake.deb", package_files(bad))
    with pytest.raises(DataVerificationError, match=r"a\.txt: sha256 differs.*version 1\.0-1 is a known one"):
        sources.fetch(src, deb=deb)
    assert not (cache / "fake").exists()
    assert leftovers(cache) == []


def test_unknown_version_accepted_only_when_files_match(tmp_path):
    src = declare(FILES)
    good = make_deb(tmp_path / "good.deb", package_files(FILES), version="2.0-1")
    assert sources.fetch(src, deb=good).is_dir()  # files match: the version does not matter
    other = declare(FILES, name="other")
    bad = make_deb(tmp_path / "bad.deb", package_files({"a.txt": b"changed upstream"}), version="2.0-1")
    with pytest.raises(DataVerificationError, match=r"version 2\.0-1 is not one whose files are known \(1\.0-1\)"):
        sources.fetch(other, deb=bad)


def test_corrupted_cache_is_detected_and_fetched_again(tmp_path, cache):
    src = declare(FILES)
    deb = make_deb(tmp_path / "fake.deb", package_files(FILES))
    folder = sources.fetch(src, deb=deb)
    (folder / "sub/b.bin").write_bytes(b"x" * len(FILES["sub/b.bin"]))  # same size: caught by the hash
    with pytest.raises(DataVerificationError, match=r"sub/b\.bin: sha256 differs"):
        sources.verify(src)
    (folder / "a.txt").unlink()
    with pytest.raises(DataVerificationError, match=r"a\.txt: missing"):
        sources.verify(src)
    assert sources.fetch(src, deb=deb) == folder  # re-fetched, never used as is
    assert sources.verify(src) == folder
    assert (folder / "sub/b.bin").read_bytes() == FILES["sub/b.bin"]
    assert leftovers(cache) == []


def test_intact_cache_is_used_without_downloading(tmp_path, monkeypatch):
    src = declare(FILES)
    sources.fetch(src, deb=make_deb(tmp_path / "fake.deb", package_files(FILES)))
    monkeypatch.setattr(sources, "_apt_download", lambda *a: pytest.fail("downloaded although cached"))
    assert sources.fetch(src).is_dir()


def test_failure_mid_extraction_leaves_nothing(tmp_path, cache, monkeypatch):
    """A crash while files are being written (here: after the first one) leaves neither the data
    set's folder nor a staging folder; an intact older copy stays in place, untouched."""
    src = declare(FILES)
    deb = make_deb(tmp_path / "fake.deb", package_files(FILES))
    real_copy, calls = shutil.copyfileobj, []

    def crash_on_second_file(fin, fout, *args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-extraction")
        return real_copy(fin, fout, *args)

    monkeypatch.setattr(sources.shutil, "copyfileobj", crash_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        sources.fetch(src, deb=deb)
    assert len(calls) == 2
    assert not (cache / "fake").exists()
    assert leftovers(cache) == []


def test_leftovers_of_a_killed_fetch_are_cleaned(tmp_path, cache):
    """A fetch killed by SIGKILL cannot clean up: its staging folder (never at the final path) is
    removed by the next fetch, under the lock."""
    cache.mkdir()
    (cache / ".fake.partial-abc123").mkdir()
    (cache / ".fake.partial-abc123" / "a.txt").write_bytes(b"half")
    (cache / ".fake.old-def456").mkdir()
    src = declare(FILES)
    folder = sources.fetch(src, deb=make_deb(tmp_path / "fake.deb", package_files(FILES)))
    assert sources.verify(src) == folder
    assert leftovers(cache) == []


def test_lock_serialises_fetches(tmp_path, cache):
    """While another process holds the data set's lock, a fetch waits, then finds the data ready."""
    src = declare(FILES)
    deb = make_deb(tmp_path / "fake.deb", package_files(FILES))
    cache.mkdir()
    result = {}

    def fetch_in_thread():
        result["folder"] = sources.fetch(src, deb=deb)

    with sources._lock(cache / ".fake.lock"):  # a separate open file description: as another process
        worker = threading.Thread(target=fetch_in_thread)
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive(), "fetch did not wait for the lock"
        assert not (cache / "fake").exists()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert result["folder"] == cache / "fake" and sources.verify(src)


def test_two_processes_fetch_the_same_data_set(tmp_path, cache):
    import multiprocessing as mp

    src = declare(FILES)
    deb = make_deb(tmp_path / "fake.deb", package_files(FILES))
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        folders = pool.starmap(sources.fetch, [(src, deb), (src, deb)])
    assert folders == [cache / "fake"] * 2
    assert sources.verify(src) == cache / "fake"
    assert leftovers(cache) == []


def test_no_apt_get_gives_the_manual_steps(monkeypatch, tmp_path, cache):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(DataUnavailableError) as err:
        sources.fetch("cgal-meshes")
    msg = str(err.value)
    assert "apt-get is not available" in msg
    assert "libcgal-demo_5.5.1-2_all.deb" in msg
    assert "pool/main/c/cgal/libcgal-demo_5.5.1-2_all.deb" in msg
    assert "graphsphere data fetch cgal-meshes --deb " in msg
    assert str(cache / "cgal-meshes") in msg
    assert not (cache / "cgal-meshes").exists()


def _fake_apt(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text("#!/bin/sh\n" + body)
    apt.chmod(0o755)
    return bin_dir


def test_failing_apt_get_gives_its_message_and_the_manual_steps(monkeypatch, tmp_path):
    bin_dir = _fake_apt(tmp_path, 'echo "E: Unable to locate package $2" >&2\nexit 100\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    with pytest.raises(DataUnavailableError, match=r"(?s)exit 100.*Unable to locate package fake-data.*"
                                                   r"apt-get update.*--deb"):
        sources.fetch(declare(FILES))


def test_download_through_apt_get(monkeypatch, tmp_path, cache):
    """The apt-get path end to end, with an apt-get that 'downloads' the fake .deb into its cwd."""
    deb = make_deb(tmp_path / "fake.deb", package_files(FILES))
    bin_dir = _fake_apt(tmp_path, f'[ "$1" = download ] && cp {deb} ./"$2"_1.0-1_all.deb\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    folder = sources.fetch(declare(FILES))
    assert (folder / "a.txt").read_bytes() == FILES["a.txt"]


def test_bad_deb_arguments(tmp_path):
    src = declare(FILES)
    with pytest.raises(DataUnavailableError, match="does not exist"):
        sources.fetch(src, deb=tmp_path / "missing.deb")
    not_a_deb = tmp_path / "x.deb"
    not_a_deb.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(sources.DataError, match="not a Debian package"):
        sources.fetch(src, deb=not_a_deb)
    with pytest.raises(KeyError, match="unknown data set 'nope'; known: cgal-meshes, ferret, fields-stations"):
        sources.fetch("nope")


def test_registry_is_consistent():
    assert list(sources.SOURCES) == ["cgal-meshes", "ferret", "fields-stations"]
    for src in sources.SOURCES.values():
        names = [rel for rel, _, _ in src.files]
        assert len(set(names)) == len(names)
        for rel, size, digest in src.files:
            assert size > 0 and len(digest) == 64 and int(digest, 16) >= 0
            assert not rel.startswith("/") and ".." not in Path(rel).parts
    cgal = sources.SOURCES["cgal-meshes"]
    suffixes = [Path(rel).suffix for rel, _, _ in cgal.files]
    assert (suffixes.count(".off"), suffixes.count(".ply"), suffixes.count(".stl")) == (139, 13, 2)
    assert {Path(rel).name for rel, _, _ in sources.SOURCES["ferret"].files} == {
        "monthly_navy_winds.cdf", "coads_climatology.cdf", "etopo60.cdf", "etopo20.cdf"}


def test_list_sources_reports_cached(tmp_path):
    rows = {r["name"]: r for r in sources.list_sources()}
    assert set(rows) == {"cgal-meshes", "ferret", "fields-stations"}
    assert rows["fields-stations"]["package"] == "r-cran-fields" and not rows["fields-stations"]["cached"]
    assert rows["ferret"]["size"] == sum(s for _, s, _ in sources.SOURCES["ferret"].files)
    assert rows["cgal-meshes"]["licence"].startswith("CC0")


def test_cli(tmp_path, capsys, cache):
    assert cli(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "cgal-meshes  (not fetched" in out and "ferret-datasets 7.6.0-5" in out
    assert cli(["data", "path", "ferret"]) == 2
    assert capsys.readouterr().err.startswith("error: data set 'ferret' is not fetched yet")
    assert cli(["data", "verify", "nope"]) == 2
    assert "unknown data set" in capsys.readouterr().err
    with pytest.raises(KeyError):
        cli(["--debug", "data", "verify", "nope"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(tmp_path))  # no apt-get there
        assert cli(["data", "fetch", "ferret"]) == 2
    assert "graphsphere data fetch ferret --deb" in capsys.readouterr().err
    # a data set put in place by hand (the manual route) is found and verified
    src = sources.SOURCES["fields-stations"]
    folder = cache / src.name
    folder.mkdir(parents=True)
    for rel, size, _ in src.files:
        (folder / rel).write_bytes(b"\0" * size)
    assert cli(["data", "verify", "fields-stations"]) == 2
    assert "COmonthlyMet.rda: sha256 differs" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get is not installed on this machine")
def test_real_fetch_fields_stations(cache, capsys):
    """The real package (4 MB): downloaded with apt-get, unpacked without dpkg, checksums match."""
    folder = sources.fetch("fields-stations")
    assert sorted(p.name for p in folder.iterdir()) == ["COmonthlyMet.rda", "NorthAmericanRainfall.rda"]
    head = (folder / "COmonthlyMet.rda").read_bytes()[:3]
    assert head in (b"\x1f\x8b\x08", b"BZh", b"\xfd7z")  # R saves .rda gzip-, bzip2- or xz-compressed
    assert cli(["data", "path", "fields-stations"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)
