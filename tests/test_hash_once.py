"""Hash once: an artifact's sha256 is computed when it is written and recorded with its stat; a
job reading it trusts that hash while size, mtime and inode match, and rehashes otherwise."""
import hashlib
import os

import pytest

from clipbd import artifacts as A
from clipbd.verbs import evaluate as evaluate_verb
from clipbd.data.fashion_mnist import CLASSES
from clipbd.data.store import save_split
from clipbd.models import clip
from images import random_set


@pytest.fixture
def hashed(monkeypatch):
    """Paths whose bytes the low-level hasher read, in order (each job starts a fresh memo)."""
    calls, real = [], A.sha256_file
    monkeypatch.setattr(A, "_SEEN", {})
    monkeypatch.setattr(A, "sha256_file", lambda p, *a, **k: calls.append(os.path.realpath(p))
                        or real(p, *a, **k))
    return calls


def backdate(path, seconds=5):
    """As if the file had taken `seconds` to write and hash (a big artifact): not racy."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def produce(path, data: bytes, inputs=(), racy=False):
    """One job writing `path` the way the CLI does (pending file, sidecar, then rename)."""
    with A.job_outputs([str(path)]):
        with A.atomic_path(path) as tmp:
            tmp.write_bytes(data)
            if not racy:
                backdate(tmp)
        return A.write_sidecar(path, step="s", config={}, inputs=list(inputs), code="c",
                               seed=None, started=0.0)


def test_recorded_hash_and_stat_are_the_published_file(tmp_path):
    art = tmp_path / "a.bin"
    info = produce(art, b"abc" * 1000)
    # the plain sha256 of the bytes, as sidecars recorded before (sha256sum gives the same)
    assert info["sha256"] == "328de8f1895f8bb09f6e6b4c2012ef2b2a6f067cd002794b750aa040a6f6d8bd"
    assert info["stat"] == A.file_stat(art)  # the rename that published it kept the stat
    assert not A.pending_path(art).exists()


def test_consumer_trusts_the_sidecar_without_reading_the_file(tmp_path, hashed):
    art = tmp_path / "a.bin"
    produce(art, b"x" * 5000)
    assert hashed == [os.path.realpath(A.pending_path(art))]  # hashed once, when written
    hashed.clear()
    A._SEEN.clear()  # another job
    child = produce(tmp_path / "b.bin", b"y", inputs=[art])
    assert child["inputs"] == {str(art): hashlib.sha256(b"x" * 5000).hexdigest()}
    assert str(art.resolve()) not in hashed
    assert A.file_sha256(art) == hashlib.sha256(b"x" * 5000).hexdigest()
    assert str(art.resolve()) not in hashed


def test_racy_file_records_no_stat_and_is_rehashed(tmp_path, hashed):
    """Hashed within RACY_NS of its write: an in-place edit in the same timestamp tick could
    keep size, mtime and inode, so its consumers hash it themselves."""
    art = tmp_path / "a.bin"
    info = produce(art, b"x" * 5000, racy=True)
    assert info["stat"] is None and info["sha256"] == hashlib.sha256(b"x" * 5000).hexdigest()
    with open(art, "r+b") as f:  # same size, same inode, mtime restored: undetectable by stat
        st = os.fstat(f.fileno())
        f.write(b"z")
    os.utime(art, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashed.clear()
    A._SEEN.clear()
    assert A.file_sha256(art) == hashlib.sha256(b"z" + b"x" * 4999).hexdigest()
    assert hashed == [str(art.resolve())]


@pytest.mark.parametrize("change", ["same size, new bytes", "new size", "touched",
                                    "replaced, mtime copied"])
def test_changed_file_is_rehashed(tmp_path, hashed, change):
    art = tmp_path / "a.bin"
    produce(art, b"x" * 5000)
    st = os.stat(art)
    if change == "same size, new bytes":
        art.write_bytes(b"z" * 5000)
        os.utime(art, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    elif change == "new size":
        art.write_bytes(b"x" * 5001)
        os.utime(art, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the mtime restored
    elif change == "touched":  # snakemake --touch, dvc pull: same bytes, new mtime
        os.utime(art, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    else:  # cp -p of other bytes over it: same size and mtime, another inode
        other = tmp_path / "other.bin"
        other.write_bytes(b"w" * 5000)
        os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(other, art)
    hashed.clear()
    A._SEEN.clear()
    assert A.file_sha256(art) == hashlib.sha256(art.read_bytes()).hexdigest()
    assert hashed == [str(art.resolve())]
    assert A.recorded_sha256(art) is None


def test_file_without_sidecar_is_hashed_once_per_job(tmp_path, hashed):
    raw = tmp_path / "raw.bin"  # raw data or imported weights: no sidecar
    raw.write_bytes(b"r" * 3000)
    for name in ("train.bin", "test.bin"):  # `prepare` writes two splits from the same files
        info = produce(tmp_path / name, name.encode(), inputs=[raw])
        assert info["inputs"] == {str(raw): hashlib.sha256(b"r" * 3000).hexdigest()}
    assert hashed.count(str(raw.resolve())) == 1
    raw.write_bytes(b"s" * 3000)  # edited while the process lives: hashed again
    os.utime(raw, ns=(0, os.stat(raw).st_mtime_ns + 1000))
    assert A.file_sha256(raw) == hashlib.sha256(b"s" * 3000).hexdigest()


def test_unreadable_or_foreign_sidecar_means_rehash(tmp_path, hashed):
    art = tmp_path / "a.bin"
    art.write_bytes(b"q" * 100)
    A.sidecar_path(art).write_text("{not json")
    assert A.file_sha256(art) == hashlib.sha256(b"q" * 100).hexdigest()
    A._SEEN.clear()
    A.sidecar_path(art).write_text('{"sha256": "00", "stat": null}')  # written before stats
    assert A.file_sha256(art) == hashlib.sha256(b"q" * 100).hexdigest()
    assert hashed.count(str(art.resolve())) == 2


def test_evaluate_job_reads_no_input_twice_and_trusts_sidecars(tmp_path, hashed, model):
    """The real `evaluate` step: its inputs' bytes are never hashed (their sidecars vouch for
    them); only the metrics it writes are."""
    ins = {"model": tmp_path / "model.safetensors", "test": tmp_path / "test.safetensors",
           "poisoned": tmp_path / "poisoned.safetensors"}
    with A.job_outputs([str(p) for p in ins.values()]):
        clip.save_checkpoint(ins["model"], model, "clipbd-tiny-vit")
        test = random_set(20, list(CLASSES), "test", seed=1)
        save_split(ins["test"], test)
        save_split(ins["poisoned"], test, {"text_prefix": ""})
        for p in ins.values():
            backdate(A.pending_path(p))
            A.write_sidecar(p, step="s", config={}, inputs=[], code="c", seed=0, started=0.0)
    hashed.clear()
    A._SEEN.clear()
    cfg = {"dataset": "fm", "defense": "none", "params": {}, "run_seed": 0, "eval_batch_size": 8,
           "row": {}, "datasets": {"fm": {"kind": "fashion_mnist", "target": "sneaker",
                                          "templates": ["a photo of a {}."]}}}
    out = tmp_path / "metrics.json"
    with A.job_outputs([str(out)]):
        evaluate_verb.evaluate(cfg, str(ins["model"]), "", str(ins["test"]), str(ins["poisoned"]),
                       str(out), "c0de")
    assert hashed == [os.path.realpath(A.pending_path(out))]
    side = A.read_json(A.sidecar_path(out))
    assert side["inputs"] == {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                              for p in ins.values()}
    assert A.read_json(out)["provenance"]["inputs"] == side["inputs"]
    assert side["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
