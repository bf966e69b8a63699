"""Config validation: every bad field is named with its value and what is allowed."""

import pytest

pytest.importorskip("pydantic")
pytest.importorskip("lightning")

from graphsphere.config import apply_overrides  # noqa: E402
from graphsphere.train.config import Config, ConfigError  # noqa: E402
from graphsphere.train.config import load_train_config as load_config  # noqa: E402

BASE = {"task": "classification", "sampling": {"type": "HEALPix", "nside": 4},
        "model": {"type": "SphericalCNN", "channels": [4], "K": 2}}


def _err(d, overrides=None) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(d, overrides)
    return str(e.value)


def test_defaults_and_overrides():
    cfg = load_config(BASE, ["trainer.max_epochs=3", "optim.lr=5e-3", "model.channels=[8, 16]",
                             "trainer.early_stopping_patience=null", "trainer.precision=bf16-mixed",
                             "data.n_train=64"])
    assert cfg.trainer.max_epochs == 3 and cfg.optim.lr == 5e-3
    assert cfg.model.args == {"channels": [8, 16], "K": 2}
    assert cfg.trainer.precision == "bf16-mixed" and cfg.data.params["n_train"] == 64
    assert load_config(BASE, ["trainer.precision=32"]).trainer.precision == "32"   # YAML int -> "32"
    assert cfg.sampling.build().npix == 192


def test_yaml_roundtrip(tmp_path):
    cfg = load_config(BASE, ["trainer.seed=7"])
    p = tmp_path / "c.yaml"
    p.write_text(cfg.to_yaml())
    again = load_config(p)
    assert again.to_dict() == cfg.to_dict() and again.trainer.seed == 7


def test_unknown_fields_everywhere():
    msg = _err({**BASE, "trainer": {"max_epoch": 3}})
    assert "trainer.max_epoch: unknown field (value 3); did you mean 'max_epochs'?" in msg
    assert "'batch_size'" in msg                                   # lists what is allowed
    assert "outptu_dir: unknown field" in _err({**BASE, "outptu_dir": "x"})
    msg = _err({**BASE, "model": {"type": "SphericalCNN", "chanels": [4]}})
    assert "model.chanels: unknown argument of SphericalCNN (value [4]); did you mean 'channels'?" in msg
    assert "model.in_channels = 3: set automatically" in _err({**BASE, "model": {"in_channels": 3}})
    msg = _err({**BASE, "sampling": {"type": "HEALPix", "nsid": 4}})
    assert "sampling (HEALPix): HEALPix has no argument 'nsid' (did you mean 'nside'?)" in msg


def test_wrong_types_and_values():
    msg = _err(BASE, ["trainer.max_epochs=many"])
    assert "trainer.max_epochs = 'many'" in msg and "valid integer" in msg
    msg = _err(BASE, ["trainer.precision=8"])
    assert "trainer.precision = '8'" in msg and "'32'" in msg and "'bf16-mixed'" in msg
    assert "optim.lr = -1" in _err(BASE, ["optim.lr=-1"])
    assert "trainer.strategy = 'horovod'" in _err(BASE, ["trainer.strategy=horovod"])
    assert "task = 'detection'" in _err({**BASE, "task": "detection"})
    assert "task: required field missing" in _err({k: v for k, v in BASE.items() if k != "task"})
    msg = _err({**BASE, "sampling": {"type": "HEALPix", "nside": 6}})
    assert "sampling (HEALPix): nside must be a power of two" in msg and "6" in msg
    msg = _err({**BASE, "sampling": {"type": "Cubed"}})
    assert "sampling (Cubed): unknown sampling 'Cubed'; known:" in msg and "HEALPix" in msg
    msg = _err({**BASE, "model": {"type": "ResNet50"}})
    assert "model.type = 'ResNet50': unknown model type 'ResNet50'; known: [" in msg and "'SphericalCNN'" in msg
    assert "optim.weight_decay = -0.1" in _err(BASE, ["optim.weight_decay=-0.1"])
    assert "optim.lr = inf" in _err(BASE, ["optim.lr=.inf"])


def test_several_problems_reported_at_once():
    msg = _err({**BASE, "trainer": {"max_epoch": 3, "batch_size": 0}, "optim": {"lr": "fast"}})
    assert "trainer.max_epoch" in msg and "trainer.batch_size = 0" in msg and "optim.lr = 'fast'" in msg


def test_model_must_fit_the_task():
    assert "segmentation needs one per pixel: use SphericalUNet" in _err({**BASE, "task": "segmentation"})
    msg = _err({**BASE, "model": {"type": "SphericalUNet", "channels": [4, 8]}})
    assert "classification of whole maps needs SphericalCNN" in msg


def test_override_syntax_errors():
    assert "looks like section.field=value" in _err(BASE, ["trainer.max_epochs"])
    assert "looks like section.field=value" in _err(BASE, ["trainer..x=1"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"task": "classification"}, ["task.x=1"])


def test_config_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(p)
    p.write_text("task: classification\ntrainer: {max_epoch: 1}\n")
    assert f"config error in {p}" in _err(p)


def test_config_object_passes_through():
    cfg = load_config(BASE)
    assert load_config(cfg) is cfg
    assert isinstance(load_config(cfg, ["trainer.seed=2"]), Config)


def test_validation_checks_the_sampling_without_building_it(monkeypatch, tmp_path):
    import graphsphere.sampling as sampling

    def no_build(*args, **kwargs):
        raise AssertionError("validation built the sampling")

    for cls in sampling.sampling_classes().values():   # from_spec builds through _from_params
        monkeypatch.setattr(cls, "_from_params", classmethod(no_build))
    cfg = load_config({**BASE, "sampling": {"type": "GaussLegendre", "nlat": 8}})
    assert cfg.sampling.args == {"nlat": 8}
    cfg = load_config(BASE, ["sampling=gl:2048"])        # the short form too (building it takes seconds)
    assert (cfg.sampling.type, cfg.sampling.args) == ("GaussLegendre", {"nlat": 2048})
    assert load_config(BASE, ["sampling=equiangular-soft:8"]).sampling.args == {"nlat": 8, "nlon": 16, "poles": "SOFT"}
    assert "sampling (Equiangular): Equiangular needs the argument(s) nlon" in _err(
        {**BASE, "sampling": {"type": "Equiangular", "nlat": 8}})
    assert "sampling (Icosahedral): level 11 is above the supported maximum 10" in _err(
        {**BASE, "sampling": {"type": "Icosahedral", "level": 11}})
    assert "poles must be one of ('DH', 'SOFT')" in _err(
        {**BASE, "sampling": {"type": "Equiangular", "nlat": 8, "nlon": 16, "poles": "X"}})
    assert "sampling (Points): Points lon: file not found" in _err(
        {**BASE, "sampling": {"type": "Points", "lon": str(tmp_path / "lon.npy"), "lat": [0, 1, 2, 3]}})


def test_the_engine_build_checks_array_contents():
    cfg = load_config({**BASE, "sampling": {"type": "HEALPix", "nside": 1, "indices": [0, 12]}})  # valid names
    with pytest.raises(ConfigError, match=r"sampling \(HEALPix\): pixel id 12 is out of range"):
        cfg.sampling.build()


def test_sampling_accepts_the_command_lines_short_form(tmp_path):
    """``sampling: "healpix:8"`` (YAML) and ``sampling=healpix:8`` (override) are ``--sampling``'s spec, read by
    parse_spec into the mapping form (the same config, so a run resumes under either spelling); a bad spec is
    parse_spec's own error, named under ``sampling``."""
    from graphsphere.sampling import parse_spec

    mapping = load_config({**BASE, "sampling": {"type": "HEALPix", "nside": 8}})
    p = tmp_path / "short.yaml"
    p.write_text('task: classification\nsampling: "healpix:8"\nmodel: {channels: [4], K: 2}\n')
    for cfg in (load_config(p), load_config(BASE, ["sampling=healpix:8"])):
        assert cfg.sampling.build() == mapping.sampling.build() == parse_spec("healpix:8")
        assert cfg.to_dict()["sampling"] == mapping.to_dict()["sampling"] == {"type": "HEALPix", "nside": 8}
    cfg = load_config(BASE, ["sampling=equiangular:8x16,poles=SOFT"])
    assert cfg.sampling.build() == parse_spec("equiangular:8x16,poles=SOFT")
    assert load_config(cfg.to_dict()).to_dict() == cfg.to_dict()      # config.yaml keeps the mapping form
    for bad in ("healpx:8", "healpix:6", "healpix:nsid=4"):
        with pytest.raises(ValueError) as parse_error:
            parse_spec(bad)
        assert f"sampling = {bad!r}: {parse_error.value}" in _err(BASE, [f"sampling={bad}"])
    assert "did you mean 'healpix'?" in _err({**BASE, "sampling": "healpx:8"})
