import os
import pickle

import pytest
import torch

from trustlab.errors import UserError
from trustlab.utils.io import (
    atomic_write_json,
    atomic_write_text,
    load_tensors,
    read_json,
    safe_torch_load,
    save_module,
    save_tensors,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_json(p, {"a": 1.0, "nan": float("nan"), "t": torch.tensor([1, 2])})
    assert read_json(p) == {"a": 1.0, "nan": None, "t": [1, 2]}
    atomic_write_text(p, "{}")
    assert read_json(p) == {}
    assert [f.name for f in p.parent.iterdir()] == ["r.json"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "r.txt"
    atomic_write_text(p, "old")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["r.txt"]


def test_read_json_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_json(tmp_path / "x.json")
    (tmp_path / "b.json").write_text("{bad")
    with pytest.raises(UserError, match="not valid JSON"):
        read_json(tmp_path / "b.json")


def test_safetensors_roundtrip_with_metadata(tmp_path):
    lin = torch.nn.Linear(3, 2)
    save_module(tmp_path / "m.safetensors", lin, {"in": 3, "out": 2})
    t, meta = load_tensors(tmp_path / "m.safetensors")
    assert torch.equal(t["weight"], lin.weight.detach())
    assert meta["spec"] == '{"in": 3, "out": 2}'
    save_tensors(tmp_path / "x.safetensors", {"a": torch.arange(4)}, {"note": "hi"})
    t, meta = load_tensors(tmp_path / "x.safetensors")
    assert t["a"].tolist() == [0, 1, 2, 3] and meta["note"] == "hi"


def test_load_tensors_rejects_garbage(tmp_path):
    (tmp_path / "g.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_tensors(tmp_path / "g.safetensors")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_safe_load_accepts_state_dict(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save({"w": torch.ones(2)}, p)
    assert torch.equal(safe_torch_load(p)["w"], torch.ones(2))


def test_safe_load_rejects_pickled_object(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(UserError, match="refusing to load"):
        safe_torch_load(p)
    p2 = tmp_path / "plain.pkl"
    p2.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="refusing to load"):
        safe_torch_load(p2)
    with pytest.raises(UserError, match="does not exist"):
        safe_torch_load(tmp_path / "none.pt")
