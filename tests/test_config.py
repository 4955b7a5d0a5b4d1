"""The typed config tree: defaults, TOML, overrides and the errors that name the key."""

import pytest

from deepsky.config import config_from_dict, load_config, to_toml
from deepsky.errors import ConfigError


def test_defaults_and_override():
    cfg = load_config()
    assert cfg.calibration.master_rejection == "winsorized"
    cfg2 = load_config(overrides=["calibration.master_sigma=4", "run.workers=2"])
    assert cfg2.calibration.master_sigma == 4.0 and cfg2.run.workers == 2
    assert cfg.calibration.master_sigma == 3.0  # the defaults are not mutated


def test_toml_file_round_trip(tmp_path):
    text = to_toml(load_config(overrides=["calibration.debayer=bilinear"]))
    p = tmp_path / "deepsky.toml"
    p.write_text(text)
    cfg = load_config(p)
    assert cfg.calibration.debayer == "bilinear"
    assert cfg == load_config(overrides=["calibration.debayer=bilinear"])


@pytest.mark.parametrize(("override", "message"), [
    ("calibration.nope=1", r"unknown setting calibration\.nope.*known: .*master_rejection"),
    ("nosection.x=1", r"unknown setting nosection"),
    ("calibration.master_rejection=foo", r"calibration\.master_rejection = 'foo'.*one of"),
    ("calibration.master_sigma=0.2", r"calibration\.master_sigma.*out of range.*1 to 10"),
    ("calibration.cosmetic=maybe", r"calibration\.cosmetic.*true or false"),
    ("run.workers=1.5", r"run\.workers.*an integer"),
    ("calibration", r"expected section\.key=value"),
])
def test_bad_settings_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_bad_toml_and_missing_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[calibration\nx=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="must be a section"):
        config_from_dict({"calibration": 3})
