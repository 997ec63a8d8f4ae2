"""The verbs of `python -m clipbd`: one module per verb in this package, named after it
(`poison-test` -> `poison_test.py`), so a verb is imported only when it runs.

A verb is declared once, by `@verb` on the function that does it: its help, its arguments
(`Out` marks the ones naming its outputs) and whether it runs as a workflow job. `clipbd.cli`
builds the command line from these declarations, and a job's code fingerprint is its verb
module with every package file it imports (`clipbd.fingerprint.stage_files`).
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Arg:
    flag: str  # "--model", or a positional name
    dest: str = ""  # the function's parameter (default: the flag's name)
    output: bool = False  # names an output: published complete or not at all (job_outputs)
    pairs: bool = False  # NAME=PATH items, handed over as a dict
    kw: dict = field(default_factory=dict)  # argparse keywords (default, nargs, type, help)

    @property
    def name(self) -> str:  # argparse's dest
        return self.flag.lstrip("-").replace("-", "_")


def arg(flag: str, dest: str = "", **kw) -> Arg:
    return Arg(flag, dest, kw=kw)


def pairs(flag: str, dest: str = "") -> Arg:
    """Zero or more NAME=PATH items (`--split mnist=a.safetensors ...`) -> {name: path}."""
    return Arg(flag, dest, pairs=True, kw={"nargs": "*", "default": []})


def output(flag: str = "--out", dest: str = "", **kw) -> Arg:
    return Arg(flag, dest, output=True, kw=kw)


@dataclass
class Verb:
    name: str
    help: str
    run: Callable
    args: tuple[Arg, ...]
    job: bool = True  # False: run by hand (import-weights) or always (audit): gets the parsed args
    epilog: str = ""

    def outputs(self, ns) -> list[str]:
        return [getattr(ns, a.name) or "" for a in self.args if a.output]

    def kwargs(self, ns, cfg: dict) -> dict:
        """The function's keyword arguments from the parsed command line and the step's
        resolved config (`--cfg`, parsed)."""
        kw = {}
        for a in self.args:
            value = getattr(ns, a.name)
            kw[a.dest or a.name] = _kv(value) if a.pairs else value
        params = inspect.signature(self.run).parameters
        common = {"cfg": cfg, "code": ns.code, "threads": ns.threads}
        kw.update({k: v for k, v in common.items() if k in params})
        return kw


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, *args: Arg, job: bool = True, epilog: str = ""):
    """Declare the decorated function as the verb `name`, in the verb module named after it
    (where `get` looks for it)."""
    def deco(fn: Callable) -> Callable:
        VERBS[name] = Verb(name, help, fn, args, job, epilog)
        return fn

    return deco


def module_name(name: str) -> str:
    return name.replace("-", "_")


def get(name: str) -> Verb | None:
    """The verb `name`, importing its module only (None: no such verb)."""
    if name not in VERBS:
        mod = module_name(name)
        if mod not in {m.name for m in pkgutil.iter_modules(__path__)}:
            return None
        importlib.import_module(f"{__name__}.{mod}")
    return VERBS.get(name)


def every() -> dict[str, Verb]:
    """Every verb (imports every verb module: for `--help`)."""
    for m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{m}")
    return dict(sorted(VERBS.items()))


def _kv(items: list[str]) -> dict[str, str]:
    import argparse

    found = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {item!r}")
        found[name] = path
    return found
