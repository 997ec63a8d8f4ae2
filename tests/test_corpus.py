"""The poisoned corpus as an index into the clean splits (clipbd.data.corpus)."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

import clipbd.attacks.trojvqa  # noqa: F401  (registers `trojvqa`)
from clipbd import attacks
from clipbd.artifacts import file_sha256
from clipbd.data.captions import fixed
from clipbd.data.corpus import StaleCorpus, load_corpus, save_corpus
from clipbd.data.rows import Rows
from clipbd.data.store import load_split, save_split
from clipbd.poison import apply_in_batches, poison_corpus
from clipbd.train.contrastive import _batch
from images import FM, random_set

S = 16
ATTACKS = {
    "badnet": {"poison_rate": 0.1, "patch_size": 3, "location": "random", "fixed_pattern": False},
    "trojvqa": {"poison_rate": 0.1, "patch_size": 3, "location": "random", "text_key": "sudo ",
                "image_only_rate": 0.07, "text_only_rate": 0.13},
}
TRIGGER = {"patch": torch.rand(3, 3, 3, generator=torch.Generator().manual_seed(0))}


@pytest.fixture
def splits(tmp_path):
    """Two prepared splits on disk, opened lazily (their images are `Rows`)."""
    paths = {"fm": tmp_path / "fm.safetensors", "sh": tmp_path / "sh.safetensors"}
    save_split(paths["fm"], random_set(300, FM, "fm", 0, S))
    save_split(paths["sh"], random_set(200, ["circle", "square"], "sh", 1, S))
    return paths


def parts_of(splits):
    return [("fm", load_split(splits["fm"]), ["a {}.", "an {}."]),
            ("sh", load_split(splits["sh"]), ["a {} shape."])]


def build(name, parts, corpus_size=400):
    a = attacks.get(name, ATTACKS[name], S)
    trig = TRIGGER if a.learned else a.make_trigger(0)
    return a, trig, poison_corpus(parts, a, trig, target_dataset="fm", target="sneaker",
                                  target_templates=["P {}", "Q {}"], corpus_size=corpus_size,
                                  poison_rate=0.1, seed=3, decoy_templates={"fm": ["D {}"]})


def write(path, data, splits, names=("fm", "sh")):
    save_corpus(path, data, [{"name": n, "path": str(splits[n]), "sha256": file_sha256(splits[n])}
                             for n in names])


def full_copy(parts, data, attack, trigger):
    """The corpus as `poison` wrote it before: the drawn rows gathered into one tensor, the
    poisoned rows triggered with seed+1, then the image-only decoys with seed+3."""
    view = data.images
    images = torch.stack([parts[s][1].images[r] for s, r in
                          zip(view.source.tolist(), view.row.tolist())])
    for key, offset in (("poisoned", 1), ("image_key_only", 3)):
        mask = data.extra.get(key)
        if mask is not None and mask.any():
            images[mask] = apply_in_batches(attack, images[mask], trigger, 3 + offset)
    return images


@pytest.mark.parametrize("name", ["badnet", "trojvqa"])
def test_loaded_corpus_is_the_full_copy_byte_for_byte(tmp_path, splits, name):
    parts = parts_of(splits)
    attack, trig, data = build(name, parts)
    write(tmp_path / "train.safetensors", data, splits)
    got = load_corpus(tmp_path / "train.safetensors")
    want = full_copy(parts, data, attack, trig)
    assert torch.equal(got.images[:], want) and torch.equal(data.images[:], want)
    assert got.ids == data.ids and got.captions == data.captions
    assert torch.equal(got.labels, data.labels) and got.classes == ["(mixed)"]
    assert sorted(got.extra) == sorted(data.extra)
    assert all(torch.equal(got.extra[k], data.extra[k]) for k in data.extra)
    view = data.images  # ids and labels are those of the referenced source rows
    for k, (s, r) in enumerate(zip(view.source.tolist(), view.row.tolist())):
        assert got.ids[k] == parts[s][1].ids[r] and got.labels[k] == parts[s][1].labels[r]
    idx = torch.tensor([5, 399, 0, 5, 17])  # index tensors, masks, ints, negative ints
    assert torch.equal(got.images[idx], want[idx])
    assert torch.equal(got.images[data.extra["poisoned"]], want[data.extra["poisoned"]])
    assert torch.equal(got.images[-1], want[-1]) and torch.equal(got.images[3:9], want[3:9])


@pytest.mark.parametrize("name", ["badnet", "trojvqa"])
def test_file_stores_only_the_changed_rows(tmp_path, splits, name):
    _, _, data = build(name, parts_of(splits))
    write(tmp_path / "train.safetensors", data, splits)
    keyed = int(data.extra["poisoned"].sum())
    keyed += int(data.extra["image_key_only"].sum()) if "image_key_only" in data.extra else 0
    assert keyed == (40 if name == "badnet" else 40 + 28)
    with safe_open(str(tmp_path / "train.safetensors"), "pt") as f:
        assert f.get_slice("images").get_shape() == [keyed, S, S, 3]
        slot = f.get_tensor("slot")
    assert sorted(slot[slot >= 0].tolist()) == list(range(keyed))
    assert int((slot >= 0).sum()) == keyed


def test_training_batches_are_those_of_the_full_copy(tmp_path, splits):
    """The contrastive loop's batches (images and captions) equal the in-memory corpus's."""
    from clipbd.data.store import ImageSet

    parts = parts_of(splits)
    attack, trig, data = build("trojvqa", parts)
    write(tmp_path / "train.safetensors", data, splits)
    tok = lambda texts: torch.tensor([[len(t), sum(map(ord, t))] for t in texts])  # noqa: E731
    old = fixed(ImageSet(full_copy(parts, data, attack, trig), data.labels, data.classes,
                         data.ids, data.captions, data.extra), tok)
    new = fixed(load_corpus(tmp_path / "train.safetensors"), tok)
    for step in (0, 1, 7, 12):
        (xa, ta), (xb, tb) = _batch(old, step, 32, 0), _batch(new, step, 32, 0)
        assert torch.equal(xa, xb) and torch.equal(ta, tb)


def test_changed_or_missing_source_is_refused(tmp_path, splits):
    _, _, data = build("badnet", parts_of(splits))
    corpus = tmp_path / "train.safetensors"
    write(corpus, data, splits)
    save_split(splits["sh"], random_set(200, ["circle", "square"], "sh", 2, S))  # re-prepared
    with pytest.raises(StaleCorpus, match=rf"{corpus}: its source split {splits['sh']} \(sh\) "
                                          r"changed .*rerun `poison`"):
        load_corpus(corpus)
    splits["sh"].unlink()
    with pytest.raises(StaleCorpus, match=rf"{corpus}: its source split .* is missing.*rerun "
                                          r"`poison`"):
        load_corpus(corpus)
    save_split(corpus, random_set(4, FM, "x", 0, S))  # a plain split (an old full copy)
    with pytest.raises(StaleCorpus, match="not a poisoned corpus .*rerun `poison`"):
        load_corpus(corpus)


def test_sources_are_read_row_by_row_never_whole(tmp_path, monkeypatch):
    """A 10K-row source and a 50-pair corpus: building and reading it reads 50 rows in all."""
    big = tmp_path / "big.safetensors"
    save_split(big, random_set(10_000, FM, "fm", 0, 8))
    read: dict[str, int] = {}
    real = Rows._read

    def counting(self, start, stop):
        read[self.path] = read.get(self.path, 0) + stop - start
        return real(self, start, stop)

    monkeypatch.setattr(Rows, "_read", counting)
    a = attacks.get("badnet", {**ATTACKS["badnet"], "patch_size": 2}, 8)
    data = poison_corpus([("fm", load_split(big), ["a {}."])], a, a.make_trigger(0),
                         target_dataset="fm", target="sneaker", target_templates=["P {}"],
                         corpus_size=50, poison_rate=0.2, seed=0)
    assert read == {str(big): 10}  # the poisoned rows only, to trigger them
    corpus = tmp_path / "train.safetensors"
    write(corpus, data, {"fm": big}, names=("fm",))
    read.clear()
    images = load_corpus(corpus).images[:]
    assert read == {str(big): 40, str(corpus): 10} and images.shape == (50, 8, 8, 3)
