import pytest

from clipbd import fingerprint as fp
from workflow_util import commented


def _stages() -> list[str]:
    return sorted(p.stem for p in (fp.PKG / "verbs").glob("*.py")
                  if f"verbs/{p.name}" not in fp.NOT_IN_JOBS)


def test_every_source_file_is_fingerprinted_or_deliberately_left_out():
    from clipbd import attacks, defenses

    listed = set(fp.CORE) | set(fp.NOT_IN_JOBS)
    for stage in _stages():  # every verb a job runs: its module and what it imports
        listed |= set(fp.stage_files(stage))
    for kind, reg in (("attack", attacks.REGISTRY), ("defense", defenses.REGISTRY)):
        for name in reg.names():  # one method per file, plus the helpers it imports
            listed |= set(fp.method_files(kind, name))
    from clipbd.supervised import attacks as sup_attacks, defenses as sup_defenses

    for name in sup_attacks.NAMES:
        listed |= fp.closure(sup_attacks.source_file(name).split("clipbd/", 1)[1])
    for name in sup_defenses.REGISTRY.names():
        listed |= fp.closure(sup_defenses.REGISTRY.module_file(name).split("clipbd/", 1)[1])
    listed |= {"supervised/__init__.py", "supervised/config.py", "supervised/grid.py",
               "supervised/defenses/__init__.py", "verbs/__init__.py"}  # planning, not jobs
    for path in fp.PKG.rglob("*.py"):
        rel = str(path.relative_to(fp.PKG))
        assert rel in listed, f"{rel} is in no stage of clipbd.fingerprint"
    for rel in listed:
        assert (fp.PKG / rel).is_file(), rel


def test_a_stage_is_its_verb_module_and_what_it_imports():
    # editing the evaluation code reruns evaluations only; the training loop is not theirs
    evaluate, backdoor = set(fp.stage_files("evaluate")), set(fp.stage_files("backdoor"))
    assert {"verbs/evaluate.py", "metrics.py", "features.py", "defenses/base.py",
            "models/clip.py", "models/configs/clipbd-tiny-vit.json"} <= evaluate
    assert "train/contrastive.py" not in evaluate and "verbs/backdoor.py" not in evaluate
    assert {"verbs/backdoor.py", "train/contrastive.py", "data/corpus.py"} <= backdoor
    assert "metrics.py" not in backdoor and "verbs/evaluate.py" not in backdoor
    assert not set(fp.NOT_IN_JOBS) & {f for s in _stages() for f in fp.stage_files(s)}
    with pytest.raises(KeyError, match="no verb module verbs/nope.py"):
        fp.stage_files("nope")


def test_fingerprint_depends_on_the_method_file_only():
    badnet = fp.method_file("attack", "badnet")
    assert badnet == "attacks/badnet.py"
    assert fp.fingerprint("trigger", badnet) != fp.fingerprint("trigger", "attacks/sig.py")
    assert fp.fingerprint("trigger", badnet) == fp.fingerprint("trigger", badnet)
    assert fp.fingerprint("evaluate", "") == fp.fingerprint("evaluate")
    assert fp.method_file("attack", "clean") == ""


def test_method_files_follow_package_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "clipbd"
    (pkg / "attacks").mkdir(parents=True)
    (pkg / "attacks" / "a.py").write_text("from clipbd.attacks.helper import x\nimport torch\n")
    (pkg / "attacks" / "helper.py").write_text("from clipbd.data import store\nx = 1\n")
    (pkg / "data").mkdir()
    (pkg / "data" / "store.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("from clipbd.cli import main\n")
    monkeypatch.setattr(fp, "PKG", pkg)
    monkeypatch.setattr(fp, "method_file", lambda kind, name: "attacks/a.py")
    fp.method_files.cache_clear()
    try:
        # cli.py is deliberately left out of job fingerprints even when imported
        assert fp.method_files("attack", "a") == ("attacks/a.py", "attacks/helper.py",
                                                  "data/__init__.py", "data/store.py")
    finally:
        fp.method_files.cache_clear()


COMMENT_ONLY = [  # (before, after): edits that change a file's bytes but not what it does
    ('def f(x):\n    """Add one."""\n    return x + 1\n',
     'def f(x):  # the successor\n    """Add one to `x`.\n\n    More words."""\n\n    return x + 1\n'),
    ('"""Module."""\nA = 1\n', '"""Module, now documented\nat length."""\n# a note\nA = (1)\n'),
    ('class C:\n    """Doc."""\n', 'class C:\n    """Other doc."""\n    # nothing else\n'),
    # a registered method's DISPLAY facts: its title, table order, docs section
    ('@register("a")\nclass A(Attack):\n    title = "A"\n    order = 1\n    k = 2\n',
     '@register("a")\nclass A(Attack):\n    title = "An A"\n    order = 5\n    section = "S"\n'
     '    k = 2\n'),
    ('@attacks.register("a")\nclass A:\n    title: str = "A"\n    k = 1\n',
     '@attacks.register("a")\nclass A:\n    k = 1\n'),
]
BEHAVIOUR = [  # edits that do change it
    ('def f(x):\n    return x + 1\n', 'def f(x):\n    return x + 2\n'),
    ('A = 1\n', 'A = 1\nB = 2\n'),
    ('def f(x):\n    """Doc."""\n    return x\n', 'def f(x):\n    "Doc."\n    return x, "Doc."\n'),
    ('S = "a # not a comment"\n', 'S = "a"\n'),
    # ... but any other attribute of it, and the same names outside a registered class
    ('@register("a")\nclass A(Attack):\n    k = 2\n', '@register("a")\nclass A(Attack):\n    k = 3\n'),
    ('class Spec:\n    title = "A"\n', 'class Spec:\n    title = "B"\n'),
    ('@dataclass\nclass Spec:\n    order: int = 1\n', '@dataclass\nclass Spec:\n    order: int = 2\n'),
]


def test_only_behaviour_changes_the_code_text(tmp_path):
    def text(src):
        path = tmp_path / "m.py"
        path.write_text(src)
        return fp.code_text(path)

    for before, after in COMMENT_ONLY:
        assert text(before) == text(after), after
    for before, after in BEHAVIOUR:
        assert text(before) != text(after), after
    (tmp_path / "c.json").write_text('{"a": 1}')
    assert fp.code_text(tmp_path / "c.json") == b'{"a": 1}'  # other files: their bytes


def test_a_comment_or_docstring_edit_of_any_package_file_keeps_its_hash(tmp_path):
    """Every .py file of the package, its module docstring reworded and a comment added,
    hashes as before (tests/test_reruns.py runs the same edit through snakemake)."""
    import ast

    files = sorted(fp.PKG.rglob("*.py"))
    assert len(files) > 80
    for path in files:
        src = path.read_text()
        edited = commented(src)
        copy = tmp_path / path.name
        copy.write_text(edited)
        assert ast.get_docstring(ast.parse(edited)) != ast.get_docstring(ast.parse(src)), path
        assert fp.code_text(copy) == fp.code_text(path), path
