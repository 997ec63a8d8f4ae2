"""Config checks against the models and files themselves: architecture names, weight
checksums, weight files in clipbd's format with the architecture's activation, prompt depth
vs the image encoder's blocks, text prompt length vs the text context length; backbones and
`backdoor_from` references, the classes of datasets read from files, and every input path
(all missing ones in one error).

Called by `clipbd.config.resolve` after the schema and cross-key checks; each error names
the config key and the fix, before any job starts.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path


def _prompted(defenses: list[str], fact: str) -> dict[str, str]:
    """defense -> its hyperparameter named by the class fact `fact` (`prompt_depth`: the
    prompted image-encoder blocks; `text_context`: the learnable text context tokens)."""
    from clipbd.defenses import REGISTRY

    return {d: getattr(REGISTRY.get(d), fact) for d in sorted(set(defenses))
            if getattr(REGISTRY.get(d), fact)}


def _error(msg: str):
    from clipbd.config import ConfigError

    return ConfigError(msg)


@lru_cache(maxsize=None)
def _sha256(path: str, size: int, mtime: float) -> str:
    from clipbd.artifacts import sha256_file

    return sha256_file(path)


def _backbones(cfg: dict) -> dict[str, tuple[str, dict]]:
    """backbone key ('model' or 'models.<n>') -> (arch, its block)."""
    out = {"model": (cfg["model"]["arch"], cfg["model"])}
    out.update({f"models.{n}": (m["arch"], m) for n, m in cfg.get("models", {}).items()})
    return out


def _arch_of(cfg: dict, dataset: str) -> str:
    name = cfg["datasets"][dataset].get("model")
    return cfg["models"][name]["arch"] if name else cfg["model"]["arch"]


def check_weights(cfg: dict) -> None:
    """Known architectures; a weight file that exists must have the configured sha256."""
    from clipbd.models.clip import open_clip  # (registers the tiny architectures' configs)

    known = open_clip.list_models()
    for key, (arch, block) in _backbones(cfg).items():
        if arch not in known:
            tiny = ", ".join(m for m in known if m.startswith("clipbd"))
            raise _error(f"config key `{key}.arch`: unknown open_clip architecture {arch!r}; "
                         f"use a tiny one ({tiny}) or an open_clip name such as ViT-B-32")
        path, want = block.get("weights"), (block.get("sha256") or "").lower()
        if path and want and Path(path).is_file():
            st = os.stat(path)
            got = _sha256(str(path), st.st_size, st.st_mtime)
            if got != want:
                raise _error(f"config key `{key}.sha256`: {path} has sha256 {got}, the config "
                             f"says {want}; fix the checksum (sha256sum {path}) or `{key}.weights`")
        if path and Path(path).is_file():
            check_weight_file(key, arch, Path(path))


def _import_command(key: str, arch: str, path: Path, kind: str) -> str:
    """The exact `import-weights` command for a file the pipeline cannot load as it is."""
    from clipbd.models import clip
    from clipbd.models.convert import looks_openai

    out = path.with_name(f"{path.name.split('.')[0]}.clipbd.safetensors")
    openai = kind == "torchscript" or (kind == "torch-zip" and looks_openai(path))
    if openai:
        cmd = f"--arch {clip.arch_with(arch, 'quick_gelu')}"
        note = " (OpenAI weights: QuickGELU)"
    else:
        act = clip.activation(arch)
        cmd = f"--arch {arch} --activation {act}"
        note = ("" if act == "quick_gelu" else "; if they are OpenAI-trained weights, use "
                f"--arch {clip.arch_with(arch, 'quick_gelu')} --activation quick_gelu instead")
    return (f"python -m clipbd import-weights {path} {cmd} --out {out}{note}, then set "
            f"`{key}.weights: {out}`, `{key}.arch` to that --arch and `{key}.sha256` to the "
            "sha256 it prints")


def check_weight_file(key: str, arch: str, path: Path) -> None:
    """`<key>.weights` is a clipbd safetensors file for `<key>.arch` (arch and activation in
    its header, written by `import-weights` or a clipbd job); anything else is refused with
    the command that converts it."""
    from clipbd.models import clip
    from clipbd.models.convert import header, sniff

    kind = sniff(path)
    if kind == "unknown":
        raise _error(f"config key `{key}.weights`: {path} is neither a clipbd safetensors file "
                     "nor a weight file import-weights reads (python -m clipbd import-weights "
                     "--help lists them); fix the path")
    names = {"torchscript": "a TorchScript archive", "torch-zip": "a pickled torch.save file",
             "torch-legacy": "a pickled torch.save file"}
    if kind != "safetensors":
        raise _error(f"config key `{key}.weights`: {path} is {names[kind]}, not a clipbd "
                     f"safetensors file; convert it once: {_import_command(key, arch, path, kind)}")
    meta = header(path)
    problem = clip.header_problem(meta, arch, key)
    if problem and not meta.get("arch"):
        raise _error(f"config key `{key}.weights`: {path} is a safetensors file without clipbd's "
                     f"header (arch, activation); convert it once: "
                     f"{_import_command(key, arch, path, kind)}")
    if problem:
        raise _error(f"config key `{key}.arch`: {path} does not go with {arch}: {problem}")


def _values(cfg: dict, block: dict, b: int, defense: str, key: str) -> list[tuple[str, int]]:
    """(config key, value) of `key` for `defense` in grid block `b` (grid overrides win)."""
    grid = block["defense_params"].get(key)
    if grid is not None:
        return [(f"grid[{b}].defense_params.{key}[{i}]", v) for i, v in enumerate(grid)]
    return [(f"defenses.{defense}.{key}", cfg["defenses"][defense][key])]


def check_prompts(cfg: dict) -> None:
    """Visual prompt depth <= the image encoder's blocks; text prompts fit the context length."""
    from clipbd.data import dataset_classes
    from clipbd.models import clip
    from clipbd.models.clip import open_clip
    from clipbd.models.text_prompt import n_tokens

    for b, block in enumerate(cfg["grid"]):
        for dataset in block["datasets"]:
            arch = _arch_of(cfg, dataset)
            mcfg = open_clip.get_model_config(arch) or {}
            layers = mcfg.get("vision_cfg", {}).get("layers")
            for defense, param in _prompted(block["defenses"], "prompt_depth").items():
                for key, depth in _values(cfg, block, b, defense, param):
                    if isinstance(layers, int) and depth > layers:
                        raise _error(f"config key `{key}`: depth {depth} exceeds the {layers} "
                                     f"blocks of {arch}'s image encoder (dataset {dataset}); "
                                     f"set it to at most {layers}")
            wanted = _prompted(block["defenses"], "text_context")
            if not wanted:
                continue
            try:
                classes = dataset_classes(cfg["datasets"][dataset])
            except (OSError, ValueError):
                continue  # unreadable classes are reported by the dataset checks
            context = mcfg.get("text_cfg", {}).get("context_length", 77)
            tok = clip.tokenizer(arch)
            keys = [cfg["attacks"].get(a, {}).get("text_key", "") for a in block["attacks"]]
            prefix = max((n_tokens(tok, k) for k in keys if k.strip()), default=0)
            words = max(n_tokens(tok, f"{c.replace('_', ' ')}.") for c in classes)
            for defense, param in wanted.items():
                for key, n_ctx in _values(cfg, block, b, defense, param):
                    total = 2 + prefix + n_ctx + words
                    if total > context:
                        raise _error(
                            f"config key `{key}`: the prompt SOS + text key ({prefix}) + n_ctx "
                            f"({n_ctx}) + class name and '.' ({words}) + EOT is {total} tokens, "
                            f"longer than {arch}'s text context length {context} (dataset "
                            f"{dataset}); set n_ctx to at most {max(0, n_ctx - total + context)}")


def check_models(cfg: dict) -> None:
    check_weights(cfg)
    check_prompts(cfg)


# ---- datasets read from files, backbones, and every path checked before any job ----


def known_classes(name: str, ds: dict, plan_only: bool) -> list[str] | None:
    """The dataset's classes; None where they cannot be known (files absent; caption CSVs)."""
    from clipbd.data import CAPTION_KINDS, FILE_KINDS, dataset_classes, missing_paths

    if ds["kind"] in CAPTION_KINDS:
        return None
    if ds["kind"] in FILE_KINDS and (plan_only or missing_paths(name, ds)):
        return None  # check_paths reports the missing files; a dry run plans without them
    try:
        return dataset_classes(ds)
    except (OSError, ValueError) as err:
        raise _error(f"config key `datasets.{name}`: cannot read its classes: {err}; "
                          "fix the files or `classnames`") from None


def check_backbones(cfg: dict) -> None:
    """`datasets.<n>.model` names a backbone of `models`; `backdoor_from` a labelled dataset."""
    from clipbd.data import CAPTION_KINDS

    datasets = cfg["datasets"]
    for name, ds in datasets.items():
        if ds.get("model") and ds["model"] not in cfg["models"]:
            raise _error(f"config key `datasets.{name}.model`: unknown backbone "
                              f"{ds['model']!r}; define it under `models` (known: "
                              f"{', '.join(cfg['models']) or 'none'})")
        src = ds.get("backdoor_from")
        if src is None:
            continue
        if src not in datasets or src == name or datasets[src].get("backdoor_from"):
            owners = [n for n in datasets if not datasets[n].get("backdoor_from")]
            raise _error(f"config key `datasets.{name}.backdoor_from`: {src!r} must be "
                              "another dataset that trains its own backdoored models; defined: "
                              + ", ".join(owners))
        if any(ds.get(k) != datasets[src].get(k) for k in ("model", "target")):
            raise _error(f"config key `datasets.{name}.backdoor_from`: {name} and {src} must "
                              "share `model` and `target` to share backdoored models")
    for b, block in enumerate(cfg["grid"]):
        for i, name in enumerate(block["datasets"]):
            if datasets[name]["kind"] in CAPTION_KINDS:
                raise _error(f"config key `grid[{b}].datasets[{i}]`: {name} is a caption "
                                  "corpus without classes; use it in backdoor.datasets or as "
                                  "defense_params.tune_dataset (CleanCLIP), not as an "
                                  "evaluated dataset")


def missing_paths(cfg: dict) -> list[str]:
    """One message per missing path (dataset files/folders, weight files): keys naming it + fix."""
    from clipbd.data import missing_paths as dataset_missing

    found: list[tuple[str, str, str]] = []
    for name, ds in cfg["datasets"].items():
        found.extend(dataset_missing(name, ds))
    weights = [("model", cfg["model"]["weights"])]
    weights += [(f"models.{n}", m["weights"]) for n, m in cfg["models"].items()]
    for key, path in weights:
        if path and not Path(path).is_file():
            found.append((f"{key}.weights", path, "point it at a local clipbd safetensors "
                          f"file and put its sha256sum under `{key}.sha256` (convert the "
                          "file you hold once: python -m clipbd import-weights --help)"))
    keys: dict[tuple[str, str], list[str]] = {}
    for key, path, fix in found:  # one message per path, naming every key that uses it
        keys.setdefault((path, fix), []).append(key)
    out = []
    for (path, fix), ks in keys.items():
        named = ", ".join(f"`{k}`" for k in ks)
        out.append(f"{path} not found (config key{'s' if len(ks) > 1 else ''} {named}): {fix}")
    return out


def check_paths(cfg: dict) -> None:
    """All missing paths in one error, before any job (skipped with plan_only: dry runs)."""
    if cfg["plan_only"]:
        return
    missing = missing_paths(cfg)
    if missing:
        lines = "\n".join(f"  {i}. {m}" for i, m in enumerate(missing, 1))
        raise _error(f"{len(missing)} input path(s) missing; fix each below, or plan the "
                          f"DAG without data with `--config plan_only=true`:\n{lines}")
