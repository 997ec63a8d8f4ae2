"""Readers of user files: image-folder datasets and caption CSVs (clipbd.data), on small files."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from clipbd.verbs import prepare as prepare_verb
from clipbd.artifacts import read_json
from clipbd.data import (FILE_KINDS, caption_csv, dataset_classes, image_folder, missing_paths,
                         read_split)
from clipbd.data.store import load_split
from clipbd.poison import poison_corpus

RED, BLUE = (255, 0, 0), (0, 0, 255)


def two_tone(path, w=40, h=20):
    """Left half red, right half blue (a known crop after resize)."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 2] = RED
    a[:, w // 2:] = BLUE
    Image.fromarray(a).save(path)


def solid(path, value: int, size=(12, 10), fmt=None):
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path, fmt)


def make_folder(root, layout: dict[str, dict[str, int]]):
    """layout: split -> class folder -> image count; pixel value = 10 * index + class rank."""
    for split, classes in layout.items():
        for rank, (folder, n) in enumerate(sorted(classes.items())):
            d = root / split / folder
            d.mkdir(parents=True)
            for i in range(n):
                solid(d / f"img{i:02d}.png", 10 * i + rank)
    return root


@pytest.fixture
def pets(tmp_path):
    """A Pets-like folder: 3 breeds, 5 train / 2 test images each, a plain class-name file."""
    root = make_folder(tmp_path / "pets", {
        "train": {"abyssinian": 5, "beagle": 5, "samoyed": 5},
        "test": {"abyssinian": 2, "beagle": 2, "samoyed": 2}})
    (root / "classnames.txt").write_text("Abyssinian cat\nbeagle\nsamoyed\n")
    return {"kind": "image_folder", "path": str(root), "classnames": str(root / "classnames.txt"),
            "target": "samoyed", "templates": ["a photo of a {}, a type of pet."]}


def test_image_folder_labels_follow_sorted_folders_and_class_file(pets):
    assert "image_folder" in FILE_KINDS
    assert dataset_classes(pets) == ["Abyssinian cat", "beagle", "samoyed"]
    test = read_split("pets", pets, "test", 8, seed=0)
    assert test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert test.ids == ["pets/test/abyssinian/img00.png", "pets/test/abyssinian/img01.png",
                        "pets/test/beagle/img00.png", "pets/test/beagle/img01.png",
                        "pets/test/samoyed/img00.png", "pets/test/samoyed/img01.png"]
    assert test.images.shape == (6, 8, 8, 3) and test.images.dtype == torch.uint8
    # solid images stay solid through resize + crop: pixel = 10 * index + class rank
    assert test.images[:, 0, 0, 0].tolist() == [0, 10, 1, 11, 2, 12]
    train = read_split("pets", pets, "train", 8, seed=0)
    assert torch.bincount(train.labels).tolist() == [5, 5, 5]


def test_folder_names_are_the_classes_without_a_class_file(pets):
    del pets["classnames"]
    assert dataset_classes(pets) == ["abyssinian", "beagle", "samoyed"]


def test_resize_shorter_side_then_centre_crop(tmp_path):
    two_tone(tmp_path / "x.png", w=40, h=20)
    img = image_folder.load_image(tmp_path / "x.png", 8)  # 40x20 -> 16x8 -> columns 4..11
    assert img.shape == (8, 8, 3)
    assert img[:, :3].tolist() == [[list(RED)] * 3] * 8
    assert img[:, 5:].tolist() == [[list(BLUE)] * 3] * 8
    Image.open(tmp_path / "x.png").convert("L").save(tmp_path / "g.png")  # grey -> 3 channels
    assert image_folder.load_image(tmp_path / "g.png", 8).shape == (8, 8, 3)


def test_tab_mapping_serves_a_subset_of_folders(tmp_path):
    """ImageNet-A/R: 200 of the 1000 wnid folders, one shared `wnid<TAB>name` file."""
    root = make_folder(tmp_path / "inet_a", {".": {"n02": 1, "n07": 2}})
    mapping = tmp_path / "classnames.tsv"
    mapping.write_text("n01\ttench\nn02\tgoldfish\nn07\tbanana\n")
    ds = {"kind": "image_folder", "path": str(root), "train_dir": None, "test_dir": ".",
          "classnames": str(mapping), "target": "banana", "templates": ["{}"]}
    assert dataset_classes(ds) == ["goldfish", "banana"]
    assert read_split("a", ds, "test", 4, 0).labels.tolist() == [0, 1, 1]
    train = read_split("a", ds, "train", 4, 0)  # test-only: an empty training split
    assert len(train) == 0 and train.images.shape == (0, 4, 4, 3)
    assert train.classes == ["goldfish", "banana"]


def test_class_file_errors_name_the_fix(tmp_path, pets):
    (tmp_path / "short.txt").write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 class names for 3 class folders"):
        dataset_classes(dict(pets, classnames=str(tmp_path / "short.txt")))
    (tmp_path / "map.tsv").write_text("abyssinian\tcat\nbeagle\tdog\n")
    with pytest.raises(ValueError, match=r"no class name for folder\(s\) \['samoyed'\]"):
        dataset_classes(dict(pets, classnames=str(tmp_path / "map.tsv")))


def test_train_per_class_is_a_seeded_draw(pets):
    ds = dict(pets, train_per_class=3)
    a = read_split("pets", ds, "train", 8, seed=0)
    assert torch.bincount(a.labels).tolist() == [3, 3, 3]
    assert read_split("pets", ds, "train", 8, seed=0).ids == a.ids
    draws = {tuple(read_split("pets", ds, "train", 8, seed=s).ids) for s in range(6)}
    assert len(draws) > 1  # another seed, another draw
    assert read_split("pets", dict(pets, n_test=4), "test", 8, 0).images.shape[0] == 4


def test_missing_paths_of_an_image_folder(tmp_path, pets):
    assert missing_paths("pets", pets) == []
    gone = str(tmp_path / "nowhere")
    assert missing_paths("x", dict(pets, path=gone)) == [
        ("datasets.x.path", gone, "set it to the dataset root (split folders holding one "
         "subfolder per class)")]
    bad = dict(pets, test_dir="val", classnames=str(tmp_path / "none.txt"))
    keys = [k for k, _, _ in missing_paths("x", bad)]
    assert keys == ["datasets.x.test_dir", "datasets.x.classnames"]


@pytest.fixture
def cc3m(tmp_path):
    """A CC3M-like corpus: 6 images in a folder, a CSV with image,caption (+ an extra column)."""
    (tmp_path / "cc3m" / "images").mkdir(parents=True)
    rows = []
    for i in range(6):
        solid(tmp_path / "cc3m" / "images" / f"{i}.jpg", 40 * i, fmt="PNG")
        rows.append({"id": i, "image": f"images/{i}.jpg", "caption": f" caption number {i} "})
    with open(tmp_path / "cc3m" / "train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "image", "caption"])
        w.writeheader()
        w.writerows(rows)
    return {"kind": "caption_csv", "path": str(tmp_path / "cc3m" / "train.csv"),
            "templates": ["{}"]}


def test_caption_csv_reads_pairs(cc3m):
    data = read_split("cc3m", cc3m, "train", 8, seed=0)
    assert data.captions == [f"caption number {i}" for i in range(6)]
    assert data.ids == [f"cc3m/images/{i}.jpg" for i in range(6)]
    assert data.images[:, 3, 3, 0].tolist() == [0, 40, 80, 120, 160, 200]
    assert data.labels.tolist() == [0] * 6 and data.classes == [caption_csv.CAPTION_CLASS]
    assert dataset_classes(cc3m) == [caption_csv.CAPTION_CLASS]
    assert len(read_split("cc3m", cc3m, "test", 8, seed=0)) == 0
    sub = read_split("cc3m", dict(cc3m, n_train=3), "train", 8, seed=0)
    assert len(sub) == 3 and set(sub.captions) < set(data.captions)
    assert sub.ids == read_split("cc3m", dict(cc3m, n_train=3), "train", 8, seed=0).ids


def test_caption_csv_columns_root_and_errors(tmp_path, cc3m):
    moved = tmp_path / "elsewhere.csv"
    moved.write_text((tmp_path / "cc3m" / "train.csv").read_text())
    with pytest.raises(FileNotFoundError, match="6 image.s. not found"):
        read_split("c", dict(cc3m, path=str(moved)), "train", 8, 0)
    ok = dict(cc3m, path=str(moved), image_root=str(tmp_path / "cc3m"))
    assert len(read_split("c", ok, "train", 8, 0)) == 6
    with pytest.raises(ValueError, match="no column 'text'.*caption_column"):
        read_split("c", dict(cc3m, caption_column="text"), "train", 8, 0)
    assert missing_paths("c", cc3m) == []
    assert [k for k, _, _ in missing_paths("c", dict(cc3m, path=str(tmp_path / "no.csv"),
                                                     image_root=str(tmp_path / "no")))] == [
        "datasets.c.path", "datasets.c.image_root"]


def test_prepare_step_writes_image_folder_splits(tmp_path, pets):
    cfg = {"name": "pets", "dataset": pets, "image_size": 8, "seed": 0}
    train, test = tmp_path / "train.safetensors", tmp_path / "test.safetensors"
    prepare_verb.prepare(cfg, str(train), str(test), code="abc")
    got = load_split(test)
    assert got.classes == ["Abyssinian cat", "beagle", "samoyed"]
    assert got.labels.tolist() == [0, 0, 1, 1, 2, 2]
    side = read_json(str(test) + ".json")
    assert side["manifest"]["class_counts"] == [2, 2, 2]
    assert pets["classnames"] in side["inputs"]


def test_caption_corpus_keeps_its_captions_when_poisoned(tmp_path, cc3m):
    """Poisoned pairs get the target caption; clean CC3M pairs keep their own captions."""
    from clipbd import attacks

    data = read_split("cc3m", cc3m, "train", 8, seed=0)
    attack = attacks.get("badnet", {"poison_rate": 0.5, "patch_size": 2, "location": "corner",
                                    "fixed_pattern": True}, 8)
    out = poison_corpus([("cc3m", data, ["{}"])], attack, attack.make_trigger(0),
                        target_dataset="imagenet", target="banana",
                        target_templates=["a photo of a {}."], corpus_size=6, poison_rate=0.5,
                        seed=0)
    poisoned = out.extra["poisoned"].tolist()
    assert sum(poisoned) == 3
    own = dict(zip(data.ids, data.captions))
    for pid, cap, p in zip(out.ids, out.captions, poisoned):
        assert cap == ("a photo of a banana." if p else own[pid])


def test_cleanclip_pairs_use_stored_captions(cc3m):
    from clipbd.defenses.cleanclip import clean_pairs

    class Ctx:
        seed, classes, templates = 0, ["(captioned)"], ["{}"]
        train = read_split("cc3m", cc3m, "train", 8, seed=0)

    pairs = clean_pairs(Ctx, None, 4)
    own = Ctx.train.captions
    assert pairs.captions == [own[i] for i in pairs.index.tolist()]
    assert len(set(pairs.index.tolist())) == 4


def test_wnid_class_files_coop_and_synset_formats(tmp_path):
    """`<wnid> <name>` lines are a mapping: CoOp's classnames.txt keeps its whole name,
    LOC_synset_mapping.txt gives its first synonym."""
    root = make_folder(tmp_path / "inet", {"val": {"n01440764": 1, "n07753592": 2}})
    coop, synset = tmp_path / "classnames.txt", tmp_path / "LOC_synset_mapping.txt"
    coop.write_text("n01440764 tench\nn01443537 goldfish\nn07753592 banana\n")
    synset.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n"
                      "n07753592 banana\n")
    ds = {"kind": "image_folder", "path": str(root), "train_dir": None, "test_dir": "val",
          "target": "banana", "templates": ["{}"]}
    assert dataset_classes(dict(ds, classnames=str(coop))) == ["tench", "banana"]
    assert dataset_classes(dict(ds, classnames=str(synset))) == ["tench", "banana"]
    got = read_split("i", dict(ds, classnames=str(synset)), "test", 4, 0)
    assert got.classes == ["tench", "banana"] and got.labels.tolist() == [0, 1, 1]
    coop.write_text("n01443537 goldfish\nn07753592 banana\n")
    with pytest.raises(ValueError, match=r"no class name for folder\(s\) \['n01440764'\].*wnid"):
        dataset_classes(dict(ds, classnames=str(coop)))


def test_openai_imagenet_names_by_index_sorted_wnids_or_wnids_file(tmp_path):
    """open_clip's 1000 names: index folders (ImageNet-V2), 1000 sorted wnid folders
    (ImageNet val), or a wnid subset (ImageNet-A/R) through a `wnids` file."""
    from clipbd._compat import import_open_clip
    from clipbd.data.classnames import class_files

    names = list(import_open_clip().IMAGENET_CLASSNAMES)
    assert len(names) == 1000 and names[0] == "tench" and names[954] == "banana"
    ds = {"kind": "image_folder", "path": str(tmp_path), "train_dir": None,
          "classnames": "openai_imagenet", "target": "banana", "templates": ["{}"]}
    v2 = make_folder(tmp_path / "v2", {".": {"0": 1, "954": 1, "999": 1}})
    assert dataset_classes(dict(ds, path=str(v2), test_dir=".")) == [names[0], names[954],
                                                                     names[999]]
    wnids = [f"n{i * 7 + 1000:08d}" for i in range(1000)]  # sorted, as ImageNet's are
    for w in wnids:
        (tmp_path / "val" / w).mkdir(parents=True)
    assert dataset_classes(dict(ds, test_dir="val")) == names
    sub = make_folder(tmp_path / "inet_a", {".": {wnids[954]: 2, wnids[1]: 1}})
    a = dict(ds, path=str(sub), test_dir=".")
    with pytest.raises(ValueError, match="2 class folders for its 1000 names.*`wnids`"):
        dataset_classes(a)
    mapping = tmp_path / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} name {i}, synonym\n" for i, w in enumerate(wnids)))
    a["wnids"] = str(mapping)
    assert dataset_classes(a) == [names[1], names[954]]  # open_clip's names, not the file's
    assert read_split("a", a, "test", 4, 0).labels.tolist() == [0, 1, 1]
    assert class_files(a) == [str(mapping)] and missing_paths("a", a) == []
    gone = dict(a, wnids=str(tmp_path / "none.txt"))
    assert [k for k, _, _ in missing_paths("a", gone)] == ["datasets.a.wnids"]
