import re
import subprocess
import sys

import pytest

from clipbd import verbs
from clipbd.cli import parser
from conftest import ROOT


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second():
    cmds = quick_start_commands()
    assert cmds == ["bash scripts/study.sh", "bash scripts/test.sh"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci
    for cmd in cmds:
        assert (ROOT / cmd.split()[1]).is_file()


VERBS = verbs.every()


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser(VERBS).parse_args([verb, "--help"])
    assert exit_.value.code == 0
    assert VERBS[verb].help.split("\n")[0] in capsys.readouterr().out


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_a_verb_is_found_by_its_name_alone(verb):
    # a job imports its own verb's module only: the module is named after the verb
    code = (f"import sys; from clipbd import verbs; v = verbs.get({verb!r}); "
            "print(v.name, sorted(m for m in sys.modules if m.startswith('clipbd.verbs.')))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [verb, f"['clipbd.verbs.{verb.replace('-', '_')}']"]


def test_every_verb_is_used_by_a_rule():
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    used = set(re.findall(r"python -m clipbd ([\w-]+)", rules))
    by_hand = {"import-weights"}  # run once, before a study
    assert used == set(VERBS) - by_hand
    assert {n for n, v in VERBS.items() if not v.job} == by_hand | {"audit"}


def test_torchvision_imports_through_clipbd():
    code = ("from clipbd._compat import import_open_clip; import_open_clip(); import torchvision, "
            "torch; print(torchvision.transforms.functional.hflip(torch.eye(2)).tolist())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[[0.0, 1.0], [1.0, 0.0]]"
    plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    if plain.returncode != 0:  # the CPU-torch + CUDA-torchvision pairing: the shim is what fixes it
        assert "torchvision::nms does not exist" in plain.stderr


def test_light_jobs_do_not_load_open_clip():
    """Data, poisoning and report jobs skip open_clip + torchvision (~1.5 s of start-up)."""
    code = ("import sys, clipbd.verbs.prepare, clipbd.verbs.trigger, clipbd.verbs.poison, "
            "clipbd.verbs.poison_test, clipbd.verbs.aggregate, clipbd.verbs.figure, clipbd.attacks; "
            "clipbd.attacks.REGISTRY.names(); "
            "print(sorted(m for m in ('open_clip', 'torchvision') if m in sys.modules)); "
            "from clipbd.models import Classifier; import clipbd.models.clip; "
            "print(sorted(m for m in ('open_clip', 'torchvision') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split("\n")[:2] == ["[]", "['open_clip', 'torchvision']"]


METHODS = ROOT / "docs" / "methods.md"
CITATION = re.compile(r'docs/methods\.md,\s*"([^"]+)"')


def cited_files() -> list:
    """The repository's own text: src/, config/, workflow/ (tracked or not) and README.md."""
    files = [ROOT / "README.md"]
    for top in ("src", "config", "workflow"):
        files += [p for p in (ROOT / top).rglob("*")
                  if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".yml", ".smk"}]
    return files


def test_methods_doc_replaces_the_internal_notes_and_every_citation_resolves():
    """No file cites the internal design note (outside the repository); every
    `docs/methods.md, "<section>"` citation names a `##` heading of docs/methods.md."""
    headings = {line[3:].strip() for line in METHODS.read_text().splitlines()
                if line.startswith("## ")}
    internal = "papers" + ".md"
    cites, bad = 0, []
    for path in cited_files():
        text = path.read_text(errors="replace")
        assert internal not in text, f"{path.relative_to(ROOT)} cites {internal}"
        for section in CITATION.findall(text):
            cites += 1
            if section not in headings:
                bad.append(f"{path.relative_to(ROOT)}: {section!r}")
    assert not bad, f"citations of missing docs/methods.md sections: {bad}"
    assert cites >= 20  # the citations exist (a regex that matches nothing would pass above)
