"""Fault tolerance, tested by really killing jobs with SIGKILL.

Kill points: during training before the first state save, right after a state save, and
during the final write (artifact written to its pending file, sidecar not yet). After each:
no output and no sidecar exist; the rerun finishes, resumes from the saved step when there
is one, and its weights equal an uninterrupted run's. Pre-training (contrastive loop), FT and
FST (supervised loop, epoch state) and CleanCLIP (its own loop) are covered, and one kill of
a whole Snakemake run (pretrain job in flight) shows Snakemake reruns it and the job resumes.

Test hooks (environment): CLIPBD_STATE_EVERY_S = seconds between state saves (0: every step);
CLIPBD_TEST_HOLD_S = sleep after each state save and before publishing an output, so a
kill lands at a known point.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from clipbd.artifacts import load_tensors, pending_path, sidecar_path
from clipbd.config import resolve
from clipbd.grid import resolved_params
from workflow_util import planned_jobs, snakemake

integration = pytest.mark.integration

DS = {"kind": "synthetic", "n_train": 256, "n_test": 64, "target": "triangle",
      "templates": ["a photo of a {} shape.", "a drawing of a {}."]}
STUDY = {"seed": 0, "image_size": 32, "datasets": {"shapes": DS},
         "pretrain": {"steps": 24, "batch_size": 32, "warmup": 2},
         "defenses": {"ft": {"epochs": 6, "batch_size": 8}, "fst": {"epochs": 6, "batch_size": 8},
                      "cleanclip": {"n_pairs": 64, "steps": 8, "batch_size": 16, "warmup": 1}},
         "grid": [{"datasets": ["shapes"], "attacks": ["clean"],
                   "defenses": ["none", "ft", "fst", "cleanclip"], "shots": [4], "seeds": [0]}]}


def _cfg():
    return resolve(json.loads(json.dumps(STUDY)))


def _pretrain_cfg(cfg):
    return {"model": cfg["model"], "pretrain": cfg["pretrain"], "seed": cfg["seed"],
            "image_size": cfg["image_size"], "datasets": {"shapes": cfg["datasets"]["shapes"]}}


def _defend_cfg(cfg, defense):
    return {"dataset": "shapes", "defense": defense,
            "params": resolved_params(cfg, "defense", defense, "default"), "run_seed": 0,
            "row": {"dataset": "shapes", "defense": defense}, "eval_batch_size": 64,
            "datasets": {"shapes": cfg["datasets"]["shapes"]}}


def _env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLIPBD_STATE_EVERY_S": "1e9"}
    env.pop("CLIPBD_TEST_HOLD_S", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _cmd(verb, cfg, *args):
    return [sys.executable, "-m", "clipbd", verb, "--cfg", json.dumps(cfg), "--threads", "1", *args]


def _run(cmd, cwd, **env):
    res = subprocess.run(["timeout", "-k", "5", "300", *cmd], cwd=cwd, env=_env(**env),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stderr


def _kill_when(cmd, cwd, ready, log, **env):
    """Start `cmd`, SIGKILL it as soon as `ready()` holds; return its stderr so far."""
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, env=_env(**env), stderr=err,
                                stdout=subprocess.DEVNULL)
        deadline = time.time() + 240
        while not ready() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the job ended before the kill point: " + Path(log).read_text()[-2000:]
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
    return Path(log).read_text()


def _weights(path):
    return load_tensors(path)[0]


def _same(a, b):
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def _nothing_complete(out):
    assert not Path(out).exists() and not sidecar_path(out).exists()


def _state_step(path):
    return load_tensors(path)[1]["step"]


def test_job_outputs_publish_only_complete_outputs(tmp_path):
    """Unit view of what the kills rely on: stale outputs go first; a failed job shows none."""
    from clipbd import artifacts as A

    out = tmp_path / "m.safetensors"
    out.write_text("stale")
    sidecar_path(out).write_text("{}")
    with pytest.raises(RuntimeError):
        with A.job_outputs([str(out)]):
            assert not out.exists() and not sidecar_path(out).exists()
            A.save_tensors(out, {"x": torch.ones(2)})
            assert pending_path(out).exists() and not out.exists()
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    with A.job_outputs([str(out), str(tmp_path / "metrics.json")]):
        A.save_tensors(out, {"x": torch.ones(2)})
        A.write_json(tmp_path / "metrics.json", {"ca": 1})
        assert not out.exists()
        A.write_sidecar(out, step="t", config={}, inputs=[], code="", seed=0, started=0.0)
        assert out.exists() and not (tmp_path / "metrics.json").exists()
    assert (tmp_path / "metrics.json").exists()
    assert json.loads(sidecar_path(out).read_text())["sha256"] == A.sha256_file(out)


def test_ambient_state_only_inside_resumable(tmp_path):
    from clipbd.train.state import ambient, resumable

    assert ambient("ft") is None
    with resumable(str(tmp_path / "d.safetensors"), "h"):
        st = ambient("ft")
        assert st.path == tmp_path / "d.safetensors.ft.state.safetensors"
        st.maybe_save(torch.nn.Linear(2, 2), torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), 0.1),
                      3, force=True)
        assert st.path.exists()
    assert not st.path.exists()  # cleared on success


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Prepared data, a reference pre-training, a few-shot draw (all uninterrupted)."""
    d = tmp_path_factory.mktemp("kill")
    cfg = _cfg()
    prep = {"name": "shapes", "dataset": cfg["datasets"]["shapes"], "image_size": 32, "seed": 0}
    _run(_cmd("prepare", prep, "--out-train", "train.safetensors", "--out-test",
              "test.safetensors"), d)
    _run(_cmd("pretrain", _pretrain_cfg(cfg), "--split", "shapes=train.safetensors",
              "--out", "ref/model.safetensors"), d)
    _run(_cmd("fewshot", {"shots": 4, "seed": 0}, "--train", "train.safetensors",
              "--out", "fewshot.json"), d)
    return d, cfg


def _pretrain(work, out):
    d, cfg = work
    return _cmd("pretrain", _pretrain_cfg(cfg), "--split", "shapes=train.safetensors", "--out", out)


@integration
def test_kill_before_first_state_save(work):
    d, _ = work
    out = d / "a" / "model.safetensors"
    log = _kill_when(_pretrain(work, "a/model.safetensors"), d,
                     lambda: "pretrain step 0/" in (d / "a.log").read_text(), d / "a.log")
    assert "pretrain step 0/24" in log
    _nothing_complete(out)
    assert not Path(str(out) + ".state.safetensors").exists()
    rerun = _run(_pretrain(work, "a/model.safetensors"), d)
    assert "resuming" not in rerun
    assert _same(_weights(out), _weights(d / "ref" / "model.safetensors"))


@integration
def test_kill_after_state_save_resumes(work):
    d, _ = work
    out = d / "b" / "model.safetensors"
    state = Path(str(out) + ".state.safetensors")
    _kill_when(_pretrain(work, "b/model.safetensors"), d, state.exists, d / "b.log",
               CLIPBD_STATE_EVERY_S=0, CLIPBD_TEST_HOLD_S=0.5)
    _nothing_complete(out)
    step = _state_step(state)
    assert 1 <= step < 24
    rerun = _run(_pretrain(work, "b/model.safetensors"), d)
    assert f"resuming from step {step} " in rerun
    assert not state.exists()  # cleared once the model is written
    assert _same(_weights(out), _weights(d / "ref" / "model.safetensors"))


@integration
def test_kill_during_final_write(work):
    d, _ = work
    out = d / "c" / "model.safetensors"
    _kill_when(_pretrain(work, "c/model.safetensors"), d, pending_path(out).exists,
               d / "c.log", CLIPBD_TEST_HOLD_S=3)
    _nothing_complete(out)
    assert pending_path(out).exists()  # the complete weights, hidden until the sidecar exists
    _run(_pretrain(work, "c/model.safetensors"), d)
    assert not pending_path(out).exists()
    assert json.loads(sidecar_path(out).read_text())["sha256"]
    assert _same(_weights(out), _weights(d / "ref" / "model.safetensors"))


@integration
@pytest.mark.parametrize("defense,loop,total", [("ft", "ft", 6), ("fst", "fst", 6),
                                                ("cleanclip", "cleanclip", 8)])
def test_defense_training_resumes(work, defense, loop, total):
    d, cfg = work
    args = ["--model", "ref/model.safetensors", "--fewshot", "fewshot.json",
            "--train", "train.safetensors"]
    ref = d / defense / "ref.safetensors"
    _run(_cmd("defend", _defend_cfg(cfg, defense), *args, "--out", str(ref)), d)
    out = d / defense / "delta.safetensors"
    state = Path(f"{out}.{loop}.state.safetensors")
    cmd = _cmd("defend", _defend_cfg(cfg, defense), *args, "--out", str(out))
    _kill_when(cmd, d, state.exists, d / f"{defense}.log", CLIPBD_STATE_EVERY_S=0,
               CLIPBD_TEST_HOLD_S=1)
    _nothing_complete(out)
    step = _state_step(state)
    assert 1 <= step < total
    rerun = _run(cmd, d)
    assert f"resuming from step {step} " in rerun
    assert not state.exists()
    assert _same(_weights(out), _weights(ref))


@integration
def test_snakemake_killed_mid_job_reruns_and_resumes(tmp_path):
    """SIGKILL to the whole Snakemake process group while pretrain runs (after a state save)."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(STUDY))
    target = "results/models/clean/model.safetensors"
    state = tmp_path / (target + ".state.safetensors")
    cmd = [*snakemake_cmd(tmp_path), target]
    with open(tmp_path / "smk.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=log, stderr=log, start_new_session=True,
                                env=_env(CLIPBD_STATE_EVERY_S=0, CLIPBD_TEST_HOLD_S=0.5))
        deadline = time.time() + 400
        while not state.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "smk.log").read_text()[-3000:]
        for pid in [proc.pid, *_descendants(proc.pid)]:  # snakemake and the job it runs
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    _nothing_complete(tmp_path / target)
    step = _state_step(state)
    assert planned_jobs(tmp_path, target) == {"pretrain": 1}
    locked = snakemake(tmp_path, target, timeout=600)  # a killed Snakemake leaves its lock:
    assert locked.returncode != 0 and "--unlock" in locked.stderr  # it says how to remove it
    assert snakemake(tmp_path, "--unlock", timeout=300).returncode == 0
    res = snakemake(tmp_path, target, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from step {step} " in (tmp_path / "logs" / "pretrain" / "clean.log").read_text()
    assert (tmp_path / target).exists() and not state.exists()


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    kids = [int(x) for x in out.stdout.split()]
    return kids + [g for k in kids for g in _descendants(k)]


def snakemake_cmd(workdir):
    from workflow_util import SNAKEMAKE

    return ["timeout", "-k", "10", "500", *SNAKEMAKE, "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--cores", "2"]
