import pytest

from trustlab.config import config_hash, load_config, parse_set
from trustlab.errors import UserError

from .toy_system import ToyConfig


def test_scale_then_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("n: 7\ninner:\n  lr: 0.5\n")
    cfg = load_config(ToyConfig, "smoke", f, ["inner.steps=9", "name=b", "flag=true", "seeds=[3]"])
    assert (cfg.n, cfg.inner.lr, cfg.inner.steps, cfg.name, cfg.flag, cfg.seeds) == (7, 0.5, 9, "b", True, [3])


def test_smoke_scale_applies():
    cfg = load_config(ToyConfig, "smoke")
    assert cfg.n == 2 and cfg.inner.steps == 1


def test_toml(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("n = 5\n[inner]\nsteps = 2\n")
    cfg = load_config(ToyConfig, "default", f)
    assert cfg.n == 5 and cfg.inner.steps == 2


def test_fraction_and_int_to_float():
    cfg = load_config(ToyConfig, overrides=["inner.lr=8/255"])
    assert cfg.inner.lr == pytest.approx(8 / 255)
    assert load_config(ToyConfig, overrides=["inner.lr=1"]).inner.lr == 1.0


def test_scalar_to_list():
    assert load_config(ToyConfig, overrides=["methods=ours"]).methods == ["ours"]


@pytest.mark.parametrize(
    "override, match",
    [
        ("nn=3", "unknown key 'nn'; did you mean 'n'"),
        ("inner.stpes=3", "did you mean 'inner.steps'"),
        ("n=abc", "n='abc' is not a valid int"),
        ("n=1.5", "is not a valid int"),
        ("flag=3", "is not a valid bool"),
        ("noequals", "bad override"),
        ("inner=3", "is a section"),
        ("n.x=1", "is not a section"),
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(UserError, match=match):
        load_config(ToyConfig, overrides=[override])


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(ToyConfig, path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("n: [1, 2\n")
    with pytest.raises(UserError, match="malformed"):
        load_config(ToyConfig, path=bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(ToyConfig, path=lst)
    ext = tmp_path / "c.ini"
    ext.write_text("x")
    with pytest.raises(UserError, match="extension"):
        load_config(ToyConfig, path=ext)


def test_unknown_scale_and_validation():
    with pytest.raises(UserError, match="unknown scale"):
        load_config(ToyConfig, "huge")
    with pytest.raises(UserError, match="no seeds"):
        load_config(ToyConfig, overrides=["seeds=[]"])
    with pytest.raises(UserError, match="unknown device"):
        load_config(ToyConfig, overrides=["device=tpu"])


def test_parse_set_yaml_values():
    assert parse_set(["a=1", "b=[1, 2]", "c=x", "d="]) == {"a": 1, "b": [1, 2], "c": "x", "d": ""}


def test_config_hash_ignores_seeds_and_device():
    a = load_config(ToyConfig)
    b = load_config(ToyConfig, overrides=["seeds=[9]", "device=cpu"])
    c = load_config(ToyConfig, overrides=["n=99"])
    assert config_hash(a) == config_hash(b) != config_hash(c)
