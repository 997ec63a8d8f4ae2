"""Overrides of nested keys, typed by the schema: what `snakemake --config` can pass.

Two spellings reach `clipbd.config.resolve`:

* a path key, `defenses__rvpt__lr=0.1`: Snakemake's `--config` takes only identifier keys
  (letters, digits, `_`, `-`), so `defenses.rvpt.lr=0.1` never gets past its argument parser;
  `.` works where no parser stands between (a config file, `clipbd.config.load`). A numeric
  part indexes a list (`grid__0__shots`).
* a nested YAML value, `defenses={rvpt: {lr: 0.1}}`: Snakemake merges it into the config
  file's block, but reads it with YAML's base loader, so every leaf is a string ('0.1').

Strings are then read as YAML where the schema asks for something else (a number, an
integer, a boolean, null, a list); a value that still does not fit is an error naming the key
and the expected type. Where the schema allows a string or null, `null` and `~` mean null.
"""
from __future__ import annotations

import copy
import re

import yaml

SPLIT = re.compile(r"__|\.")
_PY = {"number": (int, float), "integer": (int,), "boolean": (bool,), "null": (type(None),),
       "array": (list,), "object": (dict,), "string": (str,)}
_WORDS = {"number": "a number", "integer": "an integer", "boolean": "true or false",
          "null": "null", "array": "a list such as [1, 2]", "object": "a mapping",
          "string": "a string"}


def _error(msg: str):
    from clipbd.config import ConfigError

    return ConfigError(msg)


def expand_paths(cfg: dict) -> dict:
    """Top-level keys such as `defenses__rvpt__lr` or `defenses.rvpt.lr` set the nested key;
    they are applied after the rest, so they win over the config file."""
    paths = [k for k in cfg if isinstance(k, str) and SPLIT.search(k)]
    if not paths:
        return cfg
    out = copy.deepcopy({k: v for k, v in cfg.items() if k not in paths})
    for key in paths:
        parts = [p for p in SPLIT.split(key)]
        if not all(parts):
            raise _error(f"config key `{key}`: an empty part; write parts joined by `__` "
                         "(on the command line) or `.`, e.g. defenses__rvpt__lr=0.1")
        node = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[:i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise _error(f"config key `{where}`: `{'.'.join(parts[:i])}` is a list of "
                                 f"{len(node)}; index it with 0..{len(node) - 1}")
                part = int(part)
            elif not isinstance(node, dict):
                raise _error(f"config key `{where}`: `{'.'.join(parts[:i])}` is "
                             f"{node!r}, not a mapping")
            if last:
                node[part] = cfg[key]
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
    return out


def _types(sch: dict) -> list[str]:
    t = sch.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _fits(value, types: list[str]) -> bool:
    if isinstance(value, bool):
        return "boolean" in types
    return any(isinstance(value, _PY[t]) for t in types if t in _PY)


def _number(value: str, types: list[str]):
    """int / float as Python reads them (YAML 1.1 reads `1e-3` as a string)."""
    for t, conv in (("integer", int), ("number", int), ("number", float)):
        if t in types:
            try:
                return conv(value)
            except ValueError:
                pass
    return None


def _key(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def coerce(value, sch: dict, path=()):
    """`value` with strings read as YAML where the schema `sch` wants another type."""
    if isinstance(value, dict):
        props, extra = sch.get("properties", {}), sch.get("additionalProperties")
        return {k: coerce(v, props.get(k, extra if isinstance(extra, dict) else {}),
                          (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        items = sch.get("items")
        return [coerce(v, items, (*path, i)) if isinstance(items, dict) else v
                for i, v in enumerate(value)]
    types = _types(sch)
    if not isinstance(value, str) or not types:
        return value
    if "string" in types:
        return None if "null" in types and value in ("null", "~") else value
    parsed = _number(value, types)
    if parsed is None:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
    if not _fits(parsed, types):
        expected = " or ".join(_WORDS.get(t, t) for t in types)
        raise _error(f"config key `{_key(path)}`: {value!r} is not {expected}; give "
                     f"{expected} (see config/README.md)")
    return coerce(parsed, sch, path) if isinstance(parsed, (list, dict)) else parsed


def apply(cfg: dict, sch: dict) -> dict:
    """Expand path keys, then type the strings (both as described in the module doc)."""
    return coerce(expand_paths(cfg), sch)
