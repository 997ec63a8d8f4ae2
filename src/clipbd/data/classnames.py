"""Class names of an image folder's class subfolders (`datasets.<name>.classnames`).

Accepted values:

* a file of one name per line, paired with the sorted class folders (counts must match);
* a file of `folder<TAB>name` lines: a mapping, so folders absent from a split are skipped
  (one ImageNet mapping serves the 200-class ImageNet-A/R subsets);
* a file of `<wnid> <name>` lines, WordNet ids such as `n01440764`: CoOp's ImageNet
  `classnames.txt` (`n01440764 tench`) and ImageNet's `LOC_synset_mapping.txt`
  (`n01440764 tench, Tinca tinca`). Also a mapping. The name is the text after the wnid up to
  the first comma: CoOp's names hold no comma, and for the synset file it is the first
  synonym (WordNet's lemma). A name that must keep a comma goes in the TAB format;
* `openai_imagenet`: the 1000 ImageNet class names of CLIP's zero-shot evaluation, as
  open_clip ships them (`IMAGENET_CLASSNAMES`), in the ImageNet-1k class order. They are
  paired with folders named by class index (`0` … `999`, ImageNet-V2), or with 1000 folders
  (the sorted wnids of ImageNet's train/val and ImageNet-Sketch, whose sorted order is the
  class order), or, for a subset of wnid folders (ImageNet-A/R), through `wnids`: a file
  whose lines start with the 1000 wnids in class order (either file above).
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

BUILTIN = {"openai_imagenet": "IMAGENET_CLASSNAMES"}
WNID = re.compile(r"^(n\d{8})\s+(\S.*)$")


def is_builtin(value: str | None) -> bool:
    return value in BUILTIN


def class_files(ds: dict) -> list[str]:
    """The files `classnames` / `wnids` name (workflow inputs, sidecar inputs)."""
    return [ds[k] for k in ("classnames", "wnids") if ds.get(k) and not is_builtin(ds[k])]


def builtin(value: str) -> list[str]:
    """open_clip's list, read from its metadata module without importing open_clip (and
    torchvision) at workflow start."""
    spec = importlib.util.find_spec("open_clip")
    path = Path(spec.origin).parent / "zero_shot_metadata.py"
    mod_spec = importlib.util.spec_from_file_location("_open_clip_zero_shot_metadata", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return list(getattr(mod, BUILTIN[value]))


def _lines(path) -> list[str]:
    lines = [ln.rstrip("\n") for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln.strip()]


def _mapped(path, mapping: dict[str, str], folders: list[str], fix: str) -> list[str]:
    unknown = [f for f in folders if f not in mapping]
    if unknown:
        raise ValueError(f"{path}: no class name for folder(s) {unknown[:3]}; {fix}")
    return [mapping[f] for f in folders]


def wnid_order(path) -> list[str]:
    """The wnids starting the lines of `path`, in file (= class index) order."""
    lines = _lines(path)
    ids = [m.group(1) for m in map(WNID.match, lines) if m]
    if len(ids) != len(lines) or not ids:
        raise ValueError(f"{path}: `wnids` needs lines `<wnid> <name>` (e.g. ImageNet's "
                         "LOC_synset_mapping.txt), one per class in class order")
    return ids


def _builtin_for(value: str, folders: list[str], wnids) -> list[str]:
    names = builtin(value)
    if all(f.isdigit() for f in folders):
        if max(int(f) for f in folders) >= len(names):
            raise ValueError(f"classnames {value}: folder {max(folders, key=int)} is past its "
                             f"{len(names)} classes")
        return [names[int(f)] for f in folders]
    if wnids:
        mapping = dict(zip(wnid_order(wnids), names))
        return _mapped(wnids, mapping, folders, f"`wnids` must list all {len(names)} wnids")
    if len(folders) != len(names):
        raise ValueError(f"classnames {value}: {len(folders)} class folders for its "
                         f"{len(names)} names; for a subset of wnid folders (ImageNet-A/R) set "
                         "`wnids` to a file of `<wnid> <name>` lines (LOC_synset_mapping.txt)")
    return names


def read(value: str, folders: list[str], wnids: str | None = None) -> list[str]:
    """Names of the sorted class `folders` from a `classnames` value (see module doc)."""
    if is_builtin(value):
        return _builtin_for(value, folders, wnids)
    lines = _lines(value)
    if lines and all("\t" in ln for ln in lines):
        mapping = {k: v.strip() for k, v in (ln.split("\t", 1) for ln in lines)}
        return _mapped(value, mapping, folders, "add `folder<TAB>name` lines for them")
    matches = [WNID.match(ln) for ln in lines]
    if lines and all(matches):
        mapping = {m.group(1): m.group(2).split(",")[0].strip() for m in matches}
        return _mapped(value, mapping, folders, "add `<wnid> <name>` lines for them")
    if len(lines) != len(folders):
        raise ValueError(f"{value}: {len(lines)} class names for {len(folders)} class folders; "
                         "give one name per sorted folder, `folder<TAB>name` lines, "
                         "`<wnid> <name>` lines, or `openai_imagenet`")
    return [ln.strip() for ln in lines]
