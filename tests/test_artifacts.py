"""clipbd.artifacts: atomic writes, safetensors round trips and refusals, provenance sidecars."""
from __future__ import annotations

import hashlib
import json
import time
from importlib import metadata

import pytest
import torch

from clipbd import artifacts as A


def _leftovers(d):
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".tmp"))


def test_save_load_tensors_round_trip_with_meta(tmp_path):
    p = tmp_path / "sub" / "t.safetensors"
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    ids = torch.tensor([5, 6, 7], dtype=torch.int64)
    img = torch.arange(24, dtype=torch.uint8).reshape(2, 2, 2, 3)
    meta = {"classes": ["a", "b"], "n": 3, "rate": 0.05, "flag": True, "nested": {"k": [1, 2]}}
    A.save_tensors(p, {"w": w.t(), "ids": ids, "img": img}, meta)  # non-contiguous input
    tensors, got = A.load_tensors(p)
    assert sorted(tensors) == ["ids", "img", "w"]
    assert torch.equal(tensors["w"], w.t()) and tensors["w"].dtype == torch.float32
    assert tensors["w"].shape == (4, 3)
    assert torch.equal(tensors["ids"], ids) and tensors["ids"].dtype == torch.int64
    assert torch.equal(tensors["img"], img) and tensors["img"].dtype == torch.uint8
    assert got == meta
    assert _leftovers(p.parent) == []


def test_save_tensors_without_meta(tmp_path):
    p = tmp_path / "t.safetensors"
    A.save_tensors(p, {"x": torch.ones(2)})
    tensors, meta = A.load_tensors(p)
    assert meta == {}
    assert tensors["x"].tolist() == [1.0, 1.0]


def test_atomic_path_success_replaces(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with A.atomic_path(p) as tmp:
        assert tmp.parent == tmp_path and tmp != p
        tmp.write_text("new")
        assert p.read_text() == "old"  # not visible before the body finishes
    assert p.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_atomic_path_failure_keeps_old_and_cleans_up(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with A.atomic_path(p) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_path_failure_creates_nothing(tmp_path):
    p = tmp_path / "new" / "f.txt"
    with pytest.raises(KeyError):
        with A.atomic_path(p) as tmp:
            tmp.write_text("x")
            raise KeyError("k")
    assert not p.exists()
    assert list(p.parent.iterdir()) == []


def test_write_json_and_read_back(tmp_path):
    p = tmp_path / "a" / "x.json"
    A.write_json(p, {"b": 1, "a": [1.5, "s"], "p": tmp_path})
    text = p.read_text()
    assert text.endswith("\n")
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert A.read_json(p) == {"a": [1.5, "s"], "b": 1, "p": str(tmp_path)}


def test_write_json_failure_keeps_old(tmp_path, monkeypatch):
    p = tmp_path / "x.json"
    A.write_json(p, {"v": 1})

    def boom(*a, **k):
        raise TypeError("cannot encode")

    monkeypatch.setattr(A.json, "dumps", boom)
    with pytest.raises(TypeError, match="cannot encode"):
        A.write_json(p, {"v": 2})
    monkeypatch.undo()
    assert A.read_json(p) == {"v": 1}
    assert _leftovers(tmp_path) == []


def test_sha256_file_and_bytes(tmp_path):
    data = b"clipbd" * 1000
    p = tmp_path / "d.bin"
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert A.sha256_file(p) == want
    assert A.sha256_file(p, chunk=7) == want
    assert A.sha256_bytes(data) == want


def _pickle(p):
    torch.save({"w": torch.zeros(3)}, p)


def _empty(p):
    p.write_bytes(b"")


def _short(p):
    p.write_bytes(b"\x01\x02\x03")


def _garbage(p):
    p.write_bytes(b"this is not a tensor file at all, just text\n" * 4)


def _header_not_json(p):
    p.write_bytes((10).to_bytes(8, "little") + b"{not json}" + b"\x00" * 8)


def _header_cut(p):
    A.save_tensors(p, {"w": torch.zeros(1)}, {"note": "x" * 200})
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("make,reason", [
    (_pickle, "bad header length"),
    (_empty, "too short"),
    (_short, "too short"),
    (_garbage, "bad header length"),
    (_header_not_json, "header is not JSON"),
    (_header_cut, "bad header length"),
], ids=["pickle", "empty", "short", "garbage", "header-not-json", "truncated-header"])
def test_check_header_refuses(tmp_path, make, reason):
    p = tmp_path / "bad.safetensors"
    make(p)
    with pytest.raises(ValueError, match=reason):
        A.check_safetensors_header(p)
    with pytest.raises(ValueError, match="not a safetensors file"):
        A.load_tensors(p)


def test_check_header_accepts_real_file(tmp_path):
    p = tmp_path / "ok.safetensors"
    A.save_tensors(p, {"w": torch.zeros(2)})
    assert A.check_safetensors_header(p) is None


def test_load_refuses_file_cut_in_half(tmp_path):
    p = tmp_path / "t.safetensors"
    A.save_tensors(p, {"w": torch.arange(1000, dtype=torch.float32)}, {"a": 1})
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt safetensors file"):
        A.load_tensors(p)


def test_sidecar_path():
    assert str(A.sidecar_path("out/model.safetensors")) == "out/model.safetensors.json"


def test_write_sidecar(tmp_path):
    art = tmp_path / "model.safetensors"
    A.save_tensors(art, {"w": torch.ones(3)})
    ins = [tmp_path / "a.bin", tmp_path / "b.bin"]
    ins[0].write_bytes(b"aaa")
    ins[1].write_bytes(b"bbb")
    started = time.time() - 2.0
    info = A.write_sidecar(art, step="pretrain", config={"lr": 0.1}, inputs=[str(p) for p in ins],
                           code="abc123", seed=3, started=started, extra={"loss": 0.5})
    side = tmp_path / "model.safetensors.json"
    assert A.read_json(side) == info
    assert info["artifact"] == str(art)
    assert info["sha256"] == A.sha256_file(art)
    assert info["inputs"] == {str(ins[0]): hashlib.sha256(b"aaa").hexdigest(),
                              str(ins[1]): hashlib.sha256(b"bbb").hexdigest()}
    assert info["packages"]["torch"] == metadata.version("torch")
    assert "python" in info["packages"]
    assert 2.0 <= info["wall_time_s"] < 60.0
    assert (info["step"], info["seed"], info["code"], info["loss"]) == ("pretrain", 3, "abc123", 0.5)
    assert info["config"] == {"lr": 0.1}


def test_write_sidecar_no_inputs(tmp_path):
    art = tmp_path / "x.json"
    art.write_text(json.dumps({"a": 1}))
    info = A.write_sidecar(art, step="s", config=None, inputs=[], code="c", seed=None,
                           started=time.time())
    assert info["inputs"] == {}
    assert info["seed"] is None
    assert info["wall_time_s"] >= 0
