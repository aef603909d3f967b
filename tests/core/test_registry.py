import pytest

from trustlab.errors import UserError
from trustlab.registry import SYSTEMS, Registry


def test_lazy_lookup_and_cache():
    reg = Registry("thing")
    reg.register("dumps", "json:dumps")
    assert "dumps" in reg and reg.names() == ["dumps"]
    assert reg.get("dumps") is reg.get("dumps")
    assert reg.get("dumps")({"a": 1}) == '{"a": 1}'


def test_did_you_mean():
    with pytest.raises(UserError, match=r"unknown system 'nadafx'; did you mean 'nadafd'\?"):
        SYSTEMS.resolve_name("nadafx")


def test_unknown_without_close_match_lists_names():
    with pytest.raises(UserError, match="known systems: fvlfp"):
        SYSTEMS.resolve_name("zzzzzz")


def test_dash_underscore_equivalent():
    assert SYSTEMS.resolve_name("refusal_index") == "refusal-index"


def test_bad_target_and_duplicate():
    reg = Registry("thing")
    with pytest.raises(ValueError):
        reg.register("x", "no_colon")
    reg.register("x", "json:dumps")
    with pytest.raises(ValueError):
        reg.register("x", "json:loads")


def test_all_ten_systems_registered():
    assert len(SYSTEMS.names()) == 10
