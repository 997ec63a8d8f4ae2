"""clipbd.data: synthetic shapes, Fashion-MNIST IDX reading, ImageSet and split storage."""
from __future__ import annotations

import gzip
import hashlib
import json

import numpy as np
import pytest
import torch

from clipbd.data import fashion_mnist as fm
from clipbd.data import synthetic
from clipbd.data.store import ImageSet, load_split, manifest, save_split, to_float, to_uint8


# ---------------------------------------------------------------- synthetic

def test_synthetic_shapes_dtypes_ids():
    d = synthetic.generate(80, 16, seed=0, split="train")
    assert d.images.shape == (80, 16, 16, 3) and d.images.dtype == torch.uint8
    assert d.labels.shape == (80,) and d.labels.dtype == torch.int64
    assert d.classes == synthetic.CLASSES and len(d.classes) == 8
    assert d.ids[0] == "shapes/train/0" and d.ids[-1] == "shapes/train/79"
    assert d.captions is None


def test_synthetic_classes_balanced():
    d = synthetic.generate(80, 12, seed=3, split="test")
    assert torch.bincount(d.labels, minlength=8).tolist() == [10] * 8
    d = synthetic.generate(19, 12, seed=3, split="test")  # round robin: 3,3,3,2,2,2,2,2
    assert torch.bincount(d.labels, minlength=8).tolist() == [3, 3, 3, 2, 2, 2, 2, 2]


def test_synthetic_deterministic_and_seed_dependent():
    a = synthetic.generate(24, 16, seed=5, split="train")
    b = synthetic.generate(24, 16, seed=5, split="train")
    assert a.images.numpy().tobytes() == b.images.numpy().tobytes()
    assert torch.equal(a.labels, b.labels)
    c = synthetic.generate(24, 16, seed=6, split="train")
    assert not torch.equal(a.images, c.images)
    t = synthetic.generate(24, 16, seed=5, split="test")
    assert not torch.equal(a.images, t.images)
    assert t.ids[0] == "shapes/test/0"


def test_synthetic_shape_is_drawn():
    d = synthetic.generate(8, 32, seed=0, split="train")
    # the shape colour is >= 0.45*255 in every channel; the background is <= ~0.55*255
    bright = (d.images.int() >= 115).all(dim=-1).flatten(1).sum(1)
    assert (bright >= 10).all()


# ---------------------------------------------------------------- fashion-mnist IDX

def _write_idx(path, arr: np.ndarray):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_root(root, n=3):
    rng = np.random.default_rng(0)
    imgs = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)
    labs = np.array([7, 0, 9, 3, 1][:n], dtype=np.uint8)
    for split in ("train", "test"):
        img_f, lab_f = fm.FILES[split]
        _write_idx(root / img_f, imgs)
        _write_idx(root / lab_f, labs)
    return imgs, labs


def test_read_idx(tmp_path):
    imgs, labs = _fake_root(tmp_path)
    x = fm.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz"))
    y = fm.read_idx(str(tmp_path / "train-labels-idx1-ubyte.gz"))
    assert x.shape == (3, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(x, imgs)
    assert y.tolist() == [7, 0, 9]


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 0x0D, 1]) + (3).to_bytes(4, "big") + b"\x00" * 12)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        fm.read_idx(str(bad))
    cut = tmp_path / "cut.gz"
    with gzip.open(cut, "wb") as f:
        f.write(bytes([0, 0, 0x08, 1]) + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="IDX payload has"):
        fm.read_idx(str(cut))


def test_load_pads_to_32(tmp_path):
    imgs, labs = _fake_root(tmp_path)
    d = fm.load(str(tmp_path), "train", image_size=32)
    assert d.images.shape == (3, 32, 32, 3) and d.images.dtype == torch.uint8
    assert d.labels.dtype == torch.int64 and d.labels.tolist() == [7, 0, 9]
    assert d.classes == fm.CLASSES and d.ids == ["fmnist/train/0", "fmnist/train/1",
                                                "fmnist/train/2"]
    for c in range(3):
        assert torch.equal(d.images[:, 2:30, 2:30, c], torch.from_numpy(imgs))
    border = d.images.clone()
    border[:, 2:30, 2:30] = 0
    assert int(border.sum()) == 0
    assert int(d.images[1, 2, 2, 0]) == int(imgs[1, 0, 0])


def test_load_28_is_identity_and_resize(tmp_path):
    imgs, _ = _fake_root(tmp_path)
    d = fm.load(str(tmp_path), "test", image_size=28)
    assert torch.equal(d.images[..., 1], torch.from_numpy(imgs))
    assert d.ids[0] == "fmnist/test/0"
    r = fm.load(str(tmp_path), "test", image_size=16)
    assert r.images.shape == (3, 16, 16, 3)


def test_load_limit(tmp_path):
    imgs, _ = _fake_root(tmp_path)
    d = fm.load(str(tmp_path), "train", image_size=32, limit=2)
    assert len(d) == 2 and d.labels.tolist() == [7, 0]
    assert d.ids == ["fmnist/train/0", "fmnist/train/1"]
    assert torch.equal(d.images[1, 2:30, 2:30, 0], torch.from_numpy(imgs[1]))


def test_check_root_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        fm.check_root(str(tmp_path), "datasets.fmnist.path")
    msg = str(info.value)
    assert "`dataset-fashion-mnist`" in msg
    assert "`datasets.fmnist.path`" in msg
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in msg


def test_check_root_one_file_missing(tmp_path):
    _fake_root(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz is missing"):
        fm.check_root(str(tmp_path), "k")
    assert len(fm.raw_files(str(tmp_path))) == 4


# ---------------------------------------------------------------- ImageSet

def _set(n=6, captions=True):
    images = torch.arange(n * 2 * 2 * 3, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ImageSet(images.reshape(n, 2, 2, 3), torch.tensor([0, 1, 2, 0, 1, 1][:n]),
                    ["a", "b", "c"], [f"x/{i}" for i in range(n)],
                    [f"cap {i}" for i in range(n)] if captions else None,
                    {"poisoned": torch.tensor([i % 2 == 0 for i in range(n)])})


@pytest.mark.parametrize("images,labels,ids,caps,match", [
    (torch.zeros(2, 4, 4, 3), torch.zeros(2, dtype=torch.long), ["a", "b"], None, "uint8"),
    (torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ["a", "b"],
     None, "uint8 \\[N,H,W,3\\]"),
    (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ["a", "b"],
     None, "uint8"),
    (torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(3, dtype=torch.long), ["a", "b"],
     None, "differ in length"),
    (torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ["a"],
     None, "differ in length"),
    (torch.zeros(2, 4, 4, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), ["a", "b"],
     ["c"], "captions and images differ"),
], ids=["float", "channels-first", "3d", "labels-len", "ids-len", "captions-len"])
def test_imageset_validation(images, labels, ids, caps, match):
    with pytest.raises(ValueError, match=match):
        ImageSet(images, labels, ["x"], ids, caps)


def test_subset_keeps_alignment():
    d = _set()
    s = d.subset([4, 0, 3])
    assert len(s) == 3
    assert s.ids == ["x/4", "x/0", "x/3"]
    assert s.labels.tolist() == [1, 0, 0]
    assert s.captions == ["cap 4", "cap 0", "cap 3"]
    assert s.extra["poisoned"].tolist() == [True, True, False]
    assert torch.equal(s.images[0], d.images[4]) and torch.equal(s.images[2], d.images[3])
    t = _set(captions=False).subset(torch.tensor([1]))
    assert t.captions is None and t.ids == ["x/1"]


def test_float_uint8_round_trip():
    d = _set()
    x = to_float(d.images)
    assert x.shape == (6, 3, 2, 2) and x.dtype == torch.float32
    assert float(x.max()) <= 1.0
    assert torch.equal(to_uint8(x), d.images)


def test_save_load_split_round_trip(tmp_path):
    d = _set()
    p = tmp_path / "split.safetensors"
    save_split(p, d, {"dataset": "toy"})
    e = load_split(p)
    assert torch.equal(e.images[:], d.images) and e.images.dtype == torch.uint8
    assert torch.equal(e.labels, d.labels) and e.labels.dtype == torch.int64
    assert e.classes == ["a", "b", "c"]
    assert e.ids == d.ids and e.captions == d.captions
    assert sorted(e.extra) == ["poisoned"] and torch.equal(e.extra["poisoned"], d.extra["poisoned"])
    assert e.content_hash() == d.content_hash()
    save_split(p, _set(captions=False))
    assert load_split(p).captions is None


def test_manifest_counts():
    d = _set()
    m = manifest(d)
    assert m["n"] == 6
    assert m["class_counts"] == [2, 3, 1]
    assert m["classes"] == ["a", "b", "c"]
    # ids and labels by hash only (the split holds them; ImageNet's as JSON would be ~80 MB)
    assert "ids" not in m and "labels" not in m
    assert m["labels_sha256"] == hashlib.sha256(d.labels.numpy().tobytes()).hexdigest()
    assert m["ids_sha256"] == hashlib.sha256(json.dumps(d.ids).encode()).hexdigest()
    want = hashlib.sha256(d.images.numpy().tobytes() + d.labels.numpy().tobytes()).hexdigest()
    assert m["content_sha256"] == want
    # a class with no images still gets a zero count
    assert manifest(d.subset([0, 3]))["class_counts"] == [2, 0, 0]
