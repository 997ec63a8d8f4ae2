"""Split images on disk (clipbd.data.rows) and the streamed prepare (clipbd.data.decode)."""
from __future__ import annotations

import hashlib
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from clipbd import attacks
from clipbd.verbs import poison_test as poison_test_verb
from clipbd.verbs import prepare as prepare_verb
from clipbd.artifacts import load_tensors, read_json, save_tensors
from clipbd.data import image_folder
from clipbd.data.decode import decoded_batches, load_source
from clipbd.data.rows import ConcatRows
from clipbd.data.store import ImageSet, load_split, save_split, split_meta, split_stream
from clipbd.poison import apply_in_batches
from images import random_set


@pytest.fixture
def split(tmp_path):
    data = random_set(23, ["a", "b", "c"], "t", 0, size=6)
    path = tmp_path / "split.safetensors"
    save_split(path, data)
    return path, data


KEYS = [0, 7, -1, -23, slice(None), slice(3, 11), slice(2, 20, 3), slice(5, 5), slice(-4, None),
        [4, 4, 0, 22, 4], [], torch.tensor([3, -2, 3]), np.int64(5), torch.tensor(9)]


@pytest.mark.parametrize("key", KEYS, ids=repr)
def test_rows_index_like_the_tensor(split, key):
    path, data = split
    rows = load_split(path).images
    assert torch.equal(rows[key], data.images[key])


def test_rows_bool_mask_and_shape(split):
    path, data = split
    rows = load_split(path).images
    mask = data.labels == 1
    assert torch.equal(rows[mask], data.images[mask]) and len(rows[mask]) == 8
    assert rows.shape == (23, 6, 6, 3) and len(rows) == 23 and rows.dtype == torch.uint8
    assert torch.equal(torch.cat(list(rows.batches(5))), data.images)
    with pytest.raises(IndexError):
        rows[torch.tensor([23])]
    with pytest.raises(IndexError):
        rows[mask[:5]]


def test_concat_rows_index_like_torch_cat(split):
    path, data = split
    other = random_set(4, ["a"], "o", 1, size=6).images
    cat = ConcatRows([load_split(path).images, other])
    want = torch.cat([data.images, other])
    assert len(cat) == 27 and cat.shape == (27, 6, 6, 3)
    perm = torch.randperm(27, generator=torch.Generator().manual_seed(0))
    for key in (perm, [26, 0, 23, 23], slice(20, 27), -1, 24, want[:, 0, 0, 0] > 128):
        assert torch.equal(cat[key], want[key])


def test_truncated_split_raises(split, tmp_path):
    path, _ = split
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="corrupt or truncated split"):
        load_split(cut)
    rows = load_split(path).images  # the file is cut after it was opened: the read fails
    path.write_bytes(path.read_bytes()[:-10])
    assert rows[0].shape == (6, 6, 3)
    with pytest.raises(OSError, match="file ends inside the images"):
        rows[-1]  # noqa: B018


def test_split_stream_is_atomic(tmp_path):
    path = tmp_path / "s.safetensors"
    kw = dict(classes=["a"], ids=["x", "y"], labels=[0, 0])
    with pytest.raises(RuntimeError, match="boom"):
        with split_stream(path, 2, (4, 4, 3), **kw) as w:
            w.write(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))
            raise RuntimeError("boom")
    assert not path.exists()
    with pytest.raises(ValueError, match="1 rows written, 2 announced"):
        with split_stream(path, 2, (4, 4, 3), **kw) as w:
            w.write(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_split_file_is_plain_safetensors_and_strings_round_trip(tmp_path):
    from safetensors import safe_open

    images = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).view(2, 4, 4, 3)
    ids, caps = ["chat/Ünïcødé.jpg", "猫/2.png"], ["a café — naïve", "写真 🐱"]
    path = tmp_path / "s.safetensors"
    with split_stream(path, 2, (4, 4, 3), classes=["ça", "b"], ids=ids, labels=[1, 0],
                      captions=caps, meta={"text_prefix": "ñ "}) as w:
        w.write(images[:1])
        w.write(images[1:])
    with safe_open(str(path), "pt") as f:
        assert torch.equal(f.get_tensor("images"), images)
        assert f.get_tensor("labels").tolist() == [1, 0]
    back = load_split(path)
    assert back.ids == ids and back.captions == caps and back.classes == ["ça", "b"]
    assert split_meta(path)["text_prefix"] == "ñ "


def _folder(root, n_per_class=3):
    """A small image folder of JPEGs and PNGs of different sizes (two classes)."""
    g = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, cls in enumerate(("cat", "dog")):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n_per_class):
                arr = g.integers(0, 256, (20 + 3 * i, 30 - 2 * c, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.{'png' if i % 2 else 'jpg'}")
    return {"kind": "image_folder", "path": str(root), "templates": ["a {}."]}


def test_streamed_prepare_equals_decoding_each_file(tmp_path):
    ds = _folder(tmp_path / "pets")
    cfg = {"name": "pets", "dataset": ds, "image_size": 16, "seed": 0}
    train, test = tmp_path / "train.safetensors", tmp_path / "test.safetensors"
    prepare_verb.prepare(cfg, str(train), str(test), code="abc", threads=2)  # 2 decoding workers
    files = sorted((tmp_path / "pets" / "test").rglob("*.*"))
    want = np.stack([image_folder.load_image(f, 16) for f in files])
    got = load_split(test)
    assert got.images[:].numpy().tobytes() == want.tobytes()
    assert got.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert got.ids == [f"pets/test/{f.relative_to(tmp_path / 'pets' / 'test').as_posix()}"
                       for f in files]
    # the same as the reader's in-memory load, and the sidecar's hash is the file's content
    old = image_folder.load(ds, "test", 16, 0, "pets")
    assert torch.equal(old.images, got.images[:]) and old.ids == got.ids
    assert read_json(str(test) + ".json")["manifest"]["content_sha256"] == got.content_hash()


def test_decoding_workers_give_the_same_bytes(tmp_path):
    _folder(tmp_path / "f", n_per_class=5)
    files = [str(f) for f in sorted((tmp_path / "f").rglob("*.*"))]
    one = torch.cat(list(decoded_batches(files, 12, workers=0, batch=3)))
    two = torch.cat(list(decoded_batches(files, 12, workers=2, batch=3)))
    assert len(one) == 20 and one.numpy().tobytes() == two.numpy().tobytes()


def test_tar_member_decodes_like_the_file(tmp_path):
    _folder(tmp_path / "f", n_per_class=2)
    files = sorted((tmp_path / "f").rglob("*.*"))
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        for f in files:
            tar.add(f, arcname=f.name + str(hash(f)))
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    for f, m in zip(files, members):
        got = load_source((str(shard), m.offset_data, m.size), 10)
        assert got.tobytes() == image_folder.load_image(f, 10).tobytes()


def test_poison_test_streams_the_same_images(tmp_path):
    test = random_set(2500, ["a", "b"], "t", 3, size=8)  # 3 trigger batches of 1000
    test_path, trig_path, out = (tmp_path / f"{n}.safetensors" for n in ("test", "trig", "out"))
    save_split(test_path, test)
    cfg = {"attack": "badnet", "image_size": 8, "seed": 4,  # random places: the generator counts
           "params": {"poison_rate": 0.1, "patch_size": 2, "location": "random",
                      "fixed_pattern": False}}
    attack = attacks.get(cfg["attack"], cfg["params"], cfg["image_size"])
    save_tensors(trig_path, attack.make_trigger(cfg["seed"]), {"attack": cfg["attack"]})
    poison_test_verb.poison_test(cfg, str(trig_path), str(test_path), str(out), code="abc")
    want = apply_in_batches(attack, test.images, load_tensors(trig_path)[0], cfg["seed"] + 2)
    got = load_split(out)
    assert torch.equal(got.images[:], want) and got.ids == test.ids
    assert split_meta(out)["text_prefix"] == attack.text_prefix
    digest = hashlib.sha256(want.numpy().tobytes() + test.labels.numpy().tobytes()).hexdigest()
    assert read_json(str(out) + ".json")["content_sha256"] == digest
    assert ImageSet(want, test.labels, test.classes, test.ids).content_hash() == digest
