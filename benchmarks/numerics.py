"""Benchmark: what pinned numerics cost, and which pins the output bytes actually need.

Usage: .venv/bin/python benchmarks/numerics.py [--steps 30] [--repeat 3] [--threads 1] [--quick]
                                               [--out results/benchmarks/numerics.json]

Each setting runs the same training in a fresh process (the pins are read when torch starts):
`--steps` AdamW steps of the tiny CLIP (`clipbd-tiny-vit`: 3-layer ViT, 2-layer text
transformer) through the study's own contrastive loop, batch 64 at 32 px, as in the embedded
study's backdoor stage. Every process prints the sha256 of the trained weights and its seconds
per step (after two warm-up steps). Settings run interleaved, `--repeat` rounds, so the
ratios (median time over the unpinned host's) are measured within one run.

Settings: `host` (no knob set: what this processor picks), `avx2_host` (what a machine with AVX2
and no AVX-512 picks: ATen, MKL and oneDNN at AVX2), `pinned` (the `numerics` default),
`avx2_strict` (MKL's STRICT mode on top), each knob alone and each pair, a second thread count,
and ATen's scalar kernels. A knob matters when setting it alone changes the bytes; the
cheapest pinning that still agrees across machines is the fastest setting whose hash equals
`avx2_host`'s. `--only NAME...` runs a few settings (and host); `--quick`: host, avx2_host
and pinned, 6 steps, 1 round. Prints one JSON line and writes it to `--out`.

The timings need a quiet machine: on a loaded one, rounds differ by more than the pins cost.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from clipbd import numerics  # noqa: E402  (imports nothing heavy)

KNOBS = {"aten": {"ATEN_CPU_CAPABILITY": "avx2"},
         "mkl": {"MKL_CBWR": "AVX2"},
         "onednn": {"ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}}
AVX2_HOST = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
             "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}


def settings(threads: int, quick: bool) -> dict[str, tuple[dict, int]]:
    """name -> (environment, threads)."""
    pinned = numerics.pinned_env(numerics.DEFAULTS, threads)
    strict = {**AVX2_HOST, "MKL_CBWR": "AVX2,STRICT"}
    out = {"host": ({}, threads), "avx2_host": (AVX2_HOST, threads), "pinned": (pinned, threads)}
    if quick:
        return out
    out["avx2_strict"] = (strict, threads)
    for n in (1, 2):
        for combo in itertools.combinations(KNOBS, n):
            out["+".join(combo)] = ({k: v for c in combo for k, v in KNOBS[c].items()}, threads)
    other = 2 if threads == 1 else 1
    for name, env in (("host", {}), ("avx2_host", AVX2_HOST), ("avx2_strict", strict)):
        out[f"{name}_{other}threads"] = (env, other)
    out["aten_default"] = ({**AVX2_HOST, "ATEN_CPU_CAPABILITY": "default"}, threads)
    return out


def worker(steps: int, threads: int, segments_n: int = 4) -> None:
    """One training in this process; prints a JSON line."""
    import torch

    from clipbd.data.captions import CaptionedImages
    from clipbd.models import clip
    from clipbd.train.contrastive import train

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = clip.create("clipbd-tiny-vit")
    g = torch.Generator().manual_seed(1)
    classes = [f"class {i}" for i in range(10)]
    labels = torch.randint(0, 10, (640,), generator=g)
    images = torch.randint(0, 256, (640, 32, 32, 3), generator=g, dtype=torch.uint8)
    bank = clip.tokenizer("clipbd-tiny-vit")([f"a photo of a {c}." for c in classes])
    data = CaptionedImages(images, labels[:, None], bank)
    kw = {"batch_size": 64, "lr": 0.002, "weight_decay": 0.1, "warmup": 1, "seed": 0}
    train(model, data, steps=steps, **kw)
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.contiguous().numpy().tobytes())
    segments = []  # timing: the fastest of a few short segments (a loaded host's bursts drop out)
    for _ in range(segments_n):
        t0 = time.perf_counter()
        train(model, data, steps=3, **kw)
        segments.append((time.perf_counter() - t0) / 3)
    step_s = min(segments)
    print(json.dumps({"sha256": h.hexdigest()[:16], "step_s": step_s,
                      "capability": torch.backends.cpu.get_cpu_capability(),
                      "threads": torch.get_num_threads()}))


def run(env: dict, threads: int, steps: int, quick: bool = False) -> dict:
    base = {k: v for k, v in os.environ.items()
            if k not in numerics.RECORDED and k != numerics.ENV}
    base.update({"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1",
                 "OMP_WAIT_POLICY": "PASSIVE", **env})
    cmd = [sys.executable, __file__, "--worker", "--steps", str(steps), "--threads", str(threads)]
    res = subprocess.run(cmd + (["--quick"] if quick else []), env=base, capture_output=True,
                         text=True, timeout=1200)
    if res.returncode:
        sys.exit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def analyse(runs: dict[str, list[dict]]) -> dict:
    """Hash per setting (one, or 'varies'), time ratio to host, and the cheapest agreeing set."""
    out: dict = {"settings": {}}
    host_s = min(r["step_s"] for r in runs["host"])
    for name, rs in runs.items():
        hashes = {r["sha256"] for r in rs}
        out["settings"][name] = {
            "sha256": hashes.pop() if len(hashes) == 1 else "varies",
            "capability": rs[0]["capability"], "threads": rs[0]["threads"],
            "step_s": round(min(r["step_s"] for r in rs), 4),
            "ratio_to_host": round(min(r["step_s"] for r in rs) / host_s, 3)}
    s = out["settings"]
    h = {n: r["sha256"] for n, r in s.items()}
    want = h.get("avx2_host")  # an AVX2-only machine, unpinned (its MKL: AVX2 branch, not STRICT)
    out["knob_alone_changes_bytes"] = {k: h[k] != h["host"] for k in KNOBS if k in h}
    agreeing = [n for n in s if h[n] == want and n != "avx2_host"
                and s[n]["threads"] == s["host"]["threads"]]
    out["agreeing_with_avx2_host"] = sorted(agreeing)
    out["cheapest_agreeing"] = min(agreeing, key=lambda n: s[n]["step_s"]) if agreeing else None
    out["host_equals_avx2_host"] = h["host"] == want
    if "avx2_strict" in h and want:  # MKL's STRICT mode on both kinds of machine
        out["strict_changes_bytes"] = h["avx2_strict"] != want
    out["threads_change_bytes"] = {n: h[n] != h[f"{n}_{o}threads"] for n in h
                                   for o in (1, 2) if f"{n}_{o}threads" in h}
    out["pinned_over_host"] = s["pinned"]["ratio_to_host"] if "pinned" in s else None
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", default=[], help="run only these settings (host always)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks" / "numerics.json"))
    args = ap.parse_args()
    if args.worker:
        worker(args.steps, args.threads, 2 if args.quick else 4)
        return 0
    steps, repeat = (6, 1) if args.quick else (args.steps, args.repeat)
    table = settings(args.threads, args.quick)
    if args.only:
        table = {n: v for n, v in table.items() if n in ("host", *args.only)}
    runs: dict[str, list[dict]] = {n: [] for n in table}
    for _ in range(repeat):  # interleaved: every setting once per round
        for name, (env, threads) in table.items():
            runs[name].append(run(env, threads, steps, args.quick))
            print(name, runs[name][-1], file=sys.stderr, flush=True)
    result = {"steps": steps, "repeat": repeat, "host_isa": numerics.host_isa(),
              **analyse(runs)}
    for name, r in result["settings"].items():
        print(f"{name:18s} {r['sha256']:16s} {r['capability']:7s} x{r['ratio_to_host']:.3f}",
              file=sys.stderr)
    line = json.dumps(result, sort_keys=True)
    print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
