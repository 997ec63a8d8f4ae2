"""Pinned numerics (clipbd.numerics): the same job gives the same bytes whatever kernels the
host or the shell would pick, every sidecar says what ran, and `pin: false` leaves the host be.

The integration test runs the real `python -m clipbd pretrain` verb (tiny CLIP, a few steps)
in fresh processes under different ambient kernel settings and compares the weights' sha256.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipbd import fingerprint, numerics
from clipbd.artifacts import read_json, sha256_file, sidecar_path
from clipbd.config import ConfigError, resolve

ROOT = Path(__file__).resolve().parents[1]
DS = {"kind": "synthetic", "n_train": 128, "n_test": 32, "target": "triangle",
      "templates": ["a photo of a {} shape.", "a drawing of a {}."]}
STUDY = {"seed": 0, "image_size": 32, "datasets": {"shapes": DS},
         "pretrain": {"steps": 8, "batch_size": 32, "warmup": 1},
         "grid": [{"datasets": ["shapes"], "attacks": ["clean"], "defenses": ["none"],
                   "shots": [1], "seeds": [0]}]}
AMBIENT = {"unset": {}, "aten_avx512": {"ATEN_CPU_CAPABILITY": "avx512"},
           "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
           "mkl_auto": {"MKL_CBWR": "AUTO"}, "mkl_strict": {"MKL_CBWR": "AVX2,STRICT"},
           "onednn_avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
                             "DNNL_MAX_CPU_ISA": "AVX512_CORE"},
           "all_wide": {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO",
                        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX", "OMP_NUM_THREADS": "2",
                        "OMP_DYNAMIC": "TRUE"}}
x86 = pytest.mark.skipif(numerics.host_isa() not in ("AVX2", "AVX512"), reason="x86 pins")


def test_default_pins_on_x86_and_the_job_threads():
    env = numerics.pinned_env(numerics.DEFAULTS, threads=3, machine="x86_64")
    assert env == {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
                   "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2",
                   "MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE",
                   "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3",
                   "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    arm = numerics.pinned_env(numerics.DEFAULTS, threads=0, machine="aarch64")
    assert arm == {"MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE",  # x86 ISA names mean
                   "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # nothing there
    off = numerics.pinned_env({"pin": False, "cuda_deterministic": False}, threads=3)
    assert off == {}


def test_settings_come_from_the_block_the_environment_or_the_defaults(monkeypatch):
    monkeypatch.delenv(numerics.ENV, raising=False)
    assert numerics.settings() == {"pin": True, "cuda_deterministic": True}
    monkeypatch.setenv(numerics.ENV, json.dumps({"pin": False}))
    assert numerics.settings() == {"pin": False, "cuda_deterministic": True}
    assert numerics.settings({"cuda_deterministic": False})["cuda_deterministic"] is False
    assert numerics._threads_arg(["pretrain", "--threads", "2", "--out", "x"]) == 2
    assert numerics._threads_arg(["pretrain", "--threads=4"]) == 4
    assert numerics._threads_arg(["pretrain", "--out", "x"]) == 0


def test_settings_change_every_code_fingerprint(monkeypatch):
    monkeypatch.delenv(numerics.ENV, raising=False)
    pinned = fingerprint.fingerprint("backdoor")
    monkeypatch.setenv(numerics.ENV, json.dumps({"pin": False, "cuda_deterministic": True}))
    assert fingerprint.fingerprint("backdoor") != pinned
    from clipbd.supervised.grid import code as sup_code

    unpinned = sup_code("train")
    monkeypatch.setenv(numerics.ENV, json.dumps({"pin": True}))
    assert fingerprint.fingerprint("backdoor") == pinned
    assert sup_code("train") != unpinned


def test_config_block_defaults_and_errors():
    cfg = resolve(json.loads(json.dumps(STUDY)))
    assert cfg["numerics"] == {"pin": True, "cuda_deterministic": True}
    with pytest.raises(ConfigError, match=r"`numerics.pinned`"):
        resolve({**json.loads(json.dumps(STUDY)), "numerics": {"pinned": False}})
    with pytest.raises(ConfigError, match=r"`numerics.pin`"):
        resolve({**json.loads(json.dumps(STUDY)), "numerics": {"pin": "sometimes"}})


def test_cuda_deterministic_option_sets_the_flags_only_for_cuda_jobs(monkeypatch):
    monkeypatch.delenv(numerics.ENV, raising=False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    numerics.apply()  # no GPU here: a CPU job keeps PyTorch's defaults
    if not torch.cuda.is_available():
        assert not torch.are_deterministic_algorithms_enabled()
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    monkeypatch.setattr(numerics, "uses_cuda", lambda: True)  # what a job on a GPU node sees
    try:
        numerics.apply()
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        info = numerics.describe()
        assert info["deterministic_algorithms"] and info["cudnn"]["deterministic"]
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]
    monkeypatch.setenv(numerics.ENV, json.dumps({"cuda_deterministic": False}))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    numerics.apply()
    assert not torch.are_deterministic_algorithms_enabled()


# ---- the real verb in fresh processes ----


def _env(ambient: dict, block: dict | None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in numerics.RECORDED and k != numerics.ENV}
    env.update({"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
                "OMP_WAIT_POLICY": "PASSIVE", **ambient})
    if block is not None:  # as the Snakefile exports it; None: a verb run by hand
        env[numerics.ENV] = json.dumps(block)
    return env


def _clipbd(tmp, verb, cfg, *args, ambient=None, block=None):
    cmd = [sys.executable, "-m", "clipbd", verb, "--cfg", json.dumps(cfg), "--threads", "1", *args]
    res = subprocess.run(["timeout", "-k", "5", "300", *cmd], cwd=tmp, capture_output=True,
                         text=True, env=_env(ambient or {}, block))
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("numerics")
    cfg = resolve(json.loads(json.dumps(STUDY)))
    ds = {"name": "shapes", "dataset": cfg["datasets"]["shapes"], "image_size": 32, "seed": 0}
    _clipbd(tmp, "prepare", ds, "--out-train", "train.safetensors",
            "--out-test", "test.safetensors")
    job = {"model": cfg["model"], "pretrain": cfg["pretrain"], "seed": 0, "image_size": 32,
           "datasets": {"shapes": cfg["datasets"]["shapes"]}}
    return tmp, job


def _pretrain(split, name, ambient, block=None):
    tmp, job = split
    out = f"{name}.safetensors"
    _clipbd(tmp, "pretrain", job, "--split", f"shapes={tmp / 'train.safetensors'}", "--out", out,
            ambient=ambient, block=block)
    return sha256_file(tmp / out), read_json(sidecar_path(tmp / out))["numerics"]


@x86
@pytest.mark.integration
def test_pinned_job_gives_one_hash_under_any_ambient_kernel_settings(split):
    hashes, records = {}, {}
    for name, ambient in AMBIENT.items():
        hashes[name], records[name] = _pretrain(split, name, ambient)
    hashes["exported"], records["exported"] = _pretrain(split, "exported", AMBIENT["all_wide"],
                                                        block={"pin": True})
    assert len(set(hashes.values())) == 1, hashes
    for name, rec in records.items():
        assert rec["pin"] is True and rec["cpu_capability"] == "AVX2", (name, rec)
        assert rec["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and rec["env"]["MKL_CBWR"] == "AVX2"
        assert rec["env"]["OMP_NUM_THREADS"] == "1" and rec["threads"] == 1
        assert rec["deterministic_algorithms"] is False  # a CPU job
        assert rec["host_isa"] == numerics.host_isa() and rec["machine"] == "x86_64"


@x86
@pytest.mark.integration
def test_opt_out_leaves_the_kernels_to_the_host_and_the_shell(split):
    _, rec = _pretrain(split, "off_default", AMBIENT["aten_default"], block={"pin": False})
    assert rec["pin"] is False and rec["cpu_capability"] == "DEFAULT"
    assert rec["env"]["ATEN_CPU_CAPABILITY"] == "default" and rec["env"]["MKL_CBWR"] is None
    _, rec = _pretrain(split, "off_host", {}, block={"pin": False})
    assert rec["env"]["ATEN_CPU_CAPABILITY"] is None
    assert rec["cpu_capability"] == {"AVX512": "AVX512", "AVX2": "AVX2"}[numerics.host_isa()]


def test_benchmark_analysis_finds_the_knobs_that_change_bytes():
    import importlib.util

    path = ROOT / "benchmarks" / "numerics.py"
    spec = importlib.util.spec_from_file_location("numerics_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def r(h, s, threads=1):
        return [{"sha256": h, "step_s": s, "capability": "AVX2", "threads": threads}]

    runs = {"host": r("a", 1.0) + r("a", 0.8), "avx2_host": r("b", 1.3), "pinned": r("c", 1.4),
            "avx2_strict": r("c", 1.5), "aten": r("d", 1.1), "mkl": r("a", 0.9),
            "aten+onednn": r("b", 1.2), "pinned_2threads": r("e", 0.9, 2)}
    out = bench.analyse(runs)
    assert out["knob_alone_changes_bytes"] == {"aten": True, "mkl": False}
    assert out["agreeing_with_avx2_host"] == ["aten+onednn"]
    assert out["cheapest_agreeing"] == "aten+onednn"
    assert out["strict_changes_bytes"]
    assert out["threads_change_bytes"] == {"pinned": True}
    assert out["pinned_over_host"] == 1.75  # fastest of each over the host's fastest (0.8)
    runs["host"].append({**runs["host"][0], "sha256": "z"})
    assert bench.analyse(runs)["settings"]["host"]["sha256"] == "varies"
