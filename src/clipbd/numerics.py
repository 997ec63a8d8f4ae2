"""Which kernels compute a job's floating point: the config's `numerics` block.

PyTorch picks its CPU kernels by the processor: ATen's vectorized kernels (AVX-512, AVX2 or
scalar), MKL's code path, oneDNN's JIT ISA. Each rounds differently, and a few hundred
training steps of the tiny models amplify the last bits into different backdoors: the same
config and seed gave SSBA an ASR of 92.5% on one machine and 16.9% on another of the same kind.
Pinned (`numerics.pin`, the default), every job computes at the AVX2 level that every x86-64
machine of this kind has, whatever the host would pick by itself:

* `ATEN_CPU_CAPABILITY=avx2`: ATen's AVX2 kernels, also on an AVX-512 host.
* `MKL_CBWR=AVX2`: MKL's conditional numerical reproducibility on its AVX2 branch (not
  STRICT: that only frees MKL's own results from the thread count, which the rest of a
  training step depends on anyway (measured in benchmarks/numerics.py), and may be slower).
* `ONEDNN_MAX_CPU_ISA=AVX2` (and `DNNL_MAX_CPU_ISA`, its name before oneDNN 2.5).
* `OMP_NUM_THREADS` / `MKL_NUM_THREADS` = the job's `--threads`, and `MKL_DYNAMIC` /
  `OMP_DYNAMIC` = FALSE: the thread count changes the bytes too, so it must not vary.

These are read when torch first runs a kernel, so they must be in the environment before a
job imports torch: the Snakefile exports them to every job (`export`, like `accel.export`),
and `python -m clipbd` sets them itself before anything imports torch (`pin_process`, from
`clipbd/__main__.py`), so a verb run by hand is pinned the same way. Pinning overrides values
the shell may hold; `pin: false` leaves the environment alone (the host picks).

On CUDA (`cuda_deterministic`, default true) a job that computes on the GPU runs with
`torch.use_deterministic_algorithms(True)`, cuDNN deterministic and not benchmarking, and
`CUBLAS_WORKSPACE_CONFIG=:4096:8` (`apply`); CPU jobs are left alone (the flag also changes
CPU kernels and fills new tensors). Every sidecar records `describe()`.

The settings are part of every job's code fingerprint (`token`, in `clipbd.fingerprint`):
they decide which kernels run and so the output bytes; changing them reruns the jobs, and the
audit calls artifacts built under other settings stale.

This module imports nothing heavy: it runs before torch is imported.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import re

ENV = "CLIPBD_NUMERICS"  # the block's settings, as JSON, for the jobs
DEFAULTS = {"pin": True, "cuda_deterministic": True}
X86 = ("x86_64", "amd64", "i686", "x86")
CPU_PINS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
            "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
FIXED_THREADS = {"MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}  # no run-time thread changes
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
CUDA_PINS = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
RECORDED = (*CPU_PINS, *FIXED_THREADS, *THREAD_VARS, *CUDA_PINS)


def settings(block: dict | None = None) -> dict:
    """The block with its defaults: from `block`, else from the environment, else the defaults."""
    if block is None:
        raw = os.environ.get(ENV, "")
        block = json.loads(raw) if raw else {}
    return {k: bool(block.get(k, v)) for k, v in DEFAULTS.items()}


def pinned_env(s: dict, threads: int = 0, machine: str | None = None) -> dict[str, str]:
    """The variables a job with settings `s` and `threads` (0: not fixed) runs with."""
    env: dict[str, str] = {}
    if s["pin"]:
        if (machine or platform.machine()).lower() in X86:  # the pins name x86 ISAs
            env.update(CPU_PINS)
        env.update(FIXED_THREADS)
        if threads > 0:
            env.update({v: str(threads) for v in THREAD_VARS})
    if s["cuda_deterministic"]:
        env.update(CUDA_PINS)  # read by cuBLAS only; harmless on the CPU
    return env


def token(s: dict | None = None) -> str:
    """What of the numerics goes into the code fingerprints: the settings and the pins."""
    s = settings() if s is None else s
    return json.dumps({"settings": s, "env": pinned_env(s, machine="x86_64")}, sort_keys=True)


def export(block: dict) -> None:
    """Set the environment every job inherits from the config's `numerics` block (Snakefile)."""
    s = settings(block)
    os.environ[ENV] = json.dumps(s, sort_keys=True)
    os.environ.update(pinned_env(s))


def _threads_arg(argv: list[str]) -> int:
    for i, arg in enumerate(argv):
        value = arg.partition("=")[2] if arg.startswith("--threads=") else (
            argv[i + 1] if arg == "--threads" and i + 1 < len(argv) else None)
        if value is not None:
            return int(value) if value.isdigit() else 0
    return 0


def pin_process(argv: list[str]) -> None:
    """`python -m clipbd`: pin this process before torch loads (settings from `export`, or the
    defaults when run by hand); threads from the verb's `--threads`."""
    os.environ.update(pinned_env(settings(), _threads_arg(argv)))


def uses_cuda() -> bool:
    """Whether this job computes on CUDA: it sees a GPU and `accelerator.device` is not cpu."""
    import torch

    from clipbd import accel

    return torch.cuda.is_available() and accel.settings()["device"] != "cpu"


def apply() -> None:
    """In a job, before it computes: the deterministic option when it computes on CUDA."""
    if not settings()["cuda_deterministic"] or not uses_cuda():
        return
    import torch

    os.environ.update(CUDA_PINS)  # before cuBLAS initializes
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@functools.lru_cache(maxsize=None)
def _versions() -> dict:
    import torch

    shown = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", shown)
    onednn = re.search(r"MKL-DNN v([\w.]+)", shown)
    return {"mkl": mkl.group(1) if mkl and torch.backends.mkl.is_available() else None,
            "onednn": onednn.group(1) if onednn and torch.backends.mkldnn.is_available() else None}


def host_isa() -> str:
    """The widest vector level this host offers (what ATen would pick by itself)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "DEFAULT"


def describe() -> dict:
    """What a sidecar records: the settings, the environment and what the job actually used."""
    import torch

    cudnn = torch.backends.cudnn
    return {**settings(), "env": {v: os.environ.get(v) for v in RECORDED},
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "host_isa": host_isa(),
            "machine": platform.machine(), "threads": torch.get_num_threads(), **_versions(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn": {"deterministic": cudnn.deterministic, "benchmark": cudnn.benchmark}}
