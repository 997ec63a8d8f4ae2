"""Code fingerprints: which source files each step depends on, hashed.

Snakemake's code trigger sees only a rule's shell text, not the modules it imports. Rules
pass these fingerprints as params, so editing one attack's file reruns exactly its jobs.

A Python file counts by what it does, not by its text: its syntax tree without docstrings
(comments, blank lines and formatting never reach the tree), so an edit of a comment or a
docstring reruns nothing, while any change of code does. A method's title, table order and
docs section (DISPLAY) are left out too: the paper jobs that print them take them as a param.
Other files (model configs) count by their bytes.
"""
from __future__ import annotations

import ast
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from clipbd import numerics

PKG = Path(__file__).resolve().parent

# What every job runs, whatever its verb. Left out on purpose: the command line (cli.py,
# verbs/__init__.py: argument parsing), config.py, config_overrides.py and config_checks.py
# (validation before any job), audit/ (its rule has no outputs and always runs), and the
# registries' __init__ files. A method's `<module>.schema.yaml` is no code: it validates the
# config, whose values each job hashes.
CORE = ("__init__.py", "_compat.py", "artifacts.py", "registry.py",
        "data/__init__.py", "data/store.py", "data/rows.py", "data/entries.py",
        "data/decode.py", "data/corpus.py", "train/curve.py")
NOT_IN_JOBS = ("accel.py",  # execution options (device, bf16, compile), like threads
               "numerics.py",  # its settings and pins go in through `numerics.token()` instead
               "cli.py", "config.py", "config_checks.py", "config_overrides.py",
               "fingerprint.py", "grid.py",
               "paths.py",  # where outputs go: the rules' inputs and outputs, seen by the DAG
               "retry.py",  # what a retry asks of SLURM, evaluated by snakemake, not by jobs
               "__main__.py", "audit/__init__.py", "audit/chain.py", "audit/expect.py",
               "audit/recompute.py",
               "attacks/__init__.py", "defenses/__init__.py", "report/__init__.py",
               "train/__init__.py", "verbs/__init__.py",
               "verbs/audit.py",  # always runs
               "verbs/import_weights.py", "models/convert.py")  # run by hand before a study
# Files a module reads that are no Python (the packaged model configs open_clip reads).
DATA_FILES = {"models/clip.py": ("models/configs/clipbd-tiny-vit.json",)}
# A string naming a package module in full: a lazy import (`importlib.import_module(name)`).
MODULE_NAME = re.compile(r"clipbd(\.\w+)+")
# Registry packages: their __init__ is passed through (not hashed) to the base and registry.
TRANSPARENT = ("attacks/__init__.py", "defenses/__init__.py", "supervised/defenses/__init__.py")


@lru_cache(maxsize=None)
def stage_files(stage: str) -> tuple[str, ...]:
    """The files of a job of `stage` (a verb module, `verbs/<stage>.py`): that module and every
    package file it imports, transitively, with the data files they read (sorted)."""
    rel = f"verbs/{stage}.py"
    if not (PKG / rel).is_file():
        raise KeyError(f"no verb module {rel} for the fingerprint stage {stage!r}")
    found = closure(rel)
    for mod, data in DATA_FILES.items():
        if mod in found:
            found |= set(data)
    return tuple(sorted(found))


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:]  # (dumped, never compiled: may be empty)
    return tree


# A registered method's facts for people: its name in the tables, their order, its heading in
# docs/methods.md. No job computes with them; the paper jobs that print them take them as a
# param (workflow/rules/common.smk: paper_titles), so editing one reruns those jobs alone.
DISPLAY = ("title", "order", "section")


def _registered(node: ast.ClassDef) -> bool:
    """A class under `@register(...)` (an attack or defense registry entry)."""
    for dec in node.decorator_list:
        fn = dec.func if isinstance(dec, ast.Call) else dec
        if (fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", "")) == "register":
            return True
    return False


def _is_display(stmt: ast.stmt) -> bool:
    targets = stmt.targets if isinstance(stmt, ast.Assign) else (
        [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
    return len(targets) == 1 and isinstance(targets[0], ast.Name) and targets[0].id in DISPLAY


def _without_display_facts(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and _registered(node):
            node.body = [stmt for stmt in node.body if not _is_display(stmt)]
    return tree


def code_text(path: Path) -> bytes:
    """What of a source file decides behaviour: a .py file's syntax tree without docstrings
    and without its registered classes' DISPLAY facts (no comments, positions or formatting),
    any other file's bytes."""
    if path.suffix != ".py":
        return path.read_bytes()
    tree = _without_display_facts(_without_docstrings(ast.parse(path.read_bytes())))
    return ast.dump(tree).encode()


@lru_cache(maxsize=None)
def _file_hash(rel: str) -> str:
    return hashlib.sha256(code_text(PKG / rel)).hexdigest()


def fingerprint(stage: str, *extra_files: str) -> str:
    """sha256 over the stage's files plus `extra_files` (paths relative to the package), and
    the numerics settings (which kernels run: `clipbd.numerics`)."""
    files = sorted(set(CORE + stage_files(stage) + tuple(f for f in extra_files if f)))
    h = hashlib.sha256(numerics.token().encode() + b"\n")
    for rel in files:
        h.update(rel.encode() + b"\0" + _file_hash(rel).encode() + b"\n")
    return h.hexdigest()[:16]


def method_file(kind: str, name: str) -> str:
    """Source file of an attack or defense, relative to the package ('' for the clean model)."""
    if name == "clean":
        return ""
    from clipbd import attacks, defenses

    reg = {"attack": attacks.REGISTRY, "defense": defenses.REGISTRY}[kind]
    return str(Path(reg.module_file(name)).resolve().relative_to(PKG))


def _clipbd_imports(rel: str) -> set[str]:
    """Package files that `rel` imports (`import clipbd.x`, `from clipbd.x import y`, or a
    string that is a module's full name: what `importlib` imports later)."""
    found = set()
    for node in ast.walk(ast.parse((PKG / rel).read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and MODULE_NAME.fullmatch(node.value):
            names = [node.value]  # a lazy import by name (clipbd.models, clipbd.data readers)
        for mod in names:
            if not mod.startswith("clipbd."):
                continue
            base = PKG.joinpath(*mod.split(".")[1:])
            for cand in (base.with_suffix(".py"), base / "__init__.py"):
                if cand.is_file():
                    found.add(str(cand.relative_to(PKG)))
    for init in found & set(TRANSPARENT) - {rel}:
        found |= _clipbd_imports(init)
    return found - set(NOT_IN_JOBS)


@lru_cache(maxsize=None)
def method_files(kind: str, name: str) -> tuple[str, ...]:
    """An attack's/defense's file plus every package file it imports, transitively (sorted).

    Shared helpers (a patch optimizer, a prompt wrapper) are thus part of the fingerprint of
    exactly the methods that use them.
    """
    first = method_file(kind, name)
    return tuple(sorted(closure(first))) if first else ()


def defend_files(defense: str, attack: str, real_trigger: bool) -> tuple[str, ...]:
    """The method files of a `defend` job: the defense's, plus the attack's and the poisoning
    code when the defense applies the attack's real trigger (`grid.real_trigger`)."""
    files = method_files("defense", defense)
    if real_trigger:
        files += tuple(sorted(closure("poison.py", method_file("attack", attack))))
    return files


def closure(*files: str) -> set[str]:
    """`files` (package-relative) and every package file they import, transitively."""
    seen, todo = set(), [f for f in files if f]
    while todo:
        rel = todo.pop()
        if rel not in seen:
            seen.add(rel)
            todo.extend(_clipbd_imports(rel) - seen)
    return seen
