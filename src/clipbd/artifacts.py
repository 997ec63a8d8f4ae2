"""Artifact I/O: atomic writes, safetensors, sha256, JSON provenance sidecars."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

# While a CLI job runs (`job_outputs`), its declared outputs are written to a hidden pending
# file and renamed onto their path only once their sidecar exists: a job killed at any point
# (SIGKILL included) leaves no output that Snakemake or a later job could take as complete.
_PENDING: dict[Path, Path | None] | None = None
HOLD_ENV = "CLIPBD_TEST_HOLD_S"  # test hook: sleep before publishing (kill tests aim at it)

PACKAGES = ("torch", "torchvision", "open_clip_torch", "numpy", "safetensors", "snakemake", "pandas")
_MAX_HEADER = 100_000_000


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Read and hash every byte of `path` (the audit's check; jobs use `file_sha256`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Hash once: an artifact is hashed when written, and its sidecar records that hash with the
# file's stat (size, mtime in ns, inode). A job reading it as an input trusts that hash while
# the stat still matches (DVC's state database works the same way) and rehashes otherwise:
# a DVC pull, `snakemake --touch`, a copy or an edit all change the stat. Files without a
# sidecar (raw data, imported weights) are hashed at most once per process (`_SEEN`).
# Racy files: an in-place edit within the same timestamp tick as the write would keep the
# mtime, so a stat is only recorded when the file's mtime is older than `RACY_NS` by the time
# its hash is done (as git treats racily clean index entries); a file hashed faster than that
# is small, and simply rehashed by its consumers.
_SEEN: dict[tuple, str] = {}
RACY_NS = 50_000_000


def file_stat(path: str | os.PathLike) -> dict[str, int]:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}


def recorded_sha256(path: str | os.PathLike, stat: dict[str, int] | None = None) -> str | None:
    """The sha256 `path`'s sidecar recorded, if the file is still the one it recorded."""
    try:
        info = json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return None
    sha = info.get("sha256") if isinstance(info, dict) else None
    if not isinstance(sha, str) or info.get("stat") != (stat or file_stat(path)):
        return None
    return sha


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of an input: its producer's recorded hash while size, mtime and inode match,
    else the bytes hashed (once per process and stat)."""
    stat = file_stat(path)
    key = (os.path.realpath(path), *stat.values())
    if key not in _SEEN:
        _SEEN[key] = recorded_sha256(path, stat) or sha256_file(path)
    return _SEEN[key]


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        key = path.resolve()
        if _PENDING is not None and key in _PENDING:
            _PENDING[key] = pending_path(path)
            os.replace(tmp, _PENDING[key])
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 meta: dict[str, Any] | None = None) -> None:
    """Atomic safetensors write; `meta` values are JSON-encoded into the header."""
    header = {k: json.dumps(v) for k, v in (meta or {}).items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
        _canonical_header(tmp)


def _canonical_header(path: Path) -> None:
    """Sort the JSON header: safetensors writes `__metadata__` in hash-map order, random per
    process, so equal content would give different bytes (and sha256) from run to run."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        head = json.loads(f.read(n))
        text = json.dumps(head, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)
        if len(text) == n:
            f.seek(8)
            f.write(text)
            return
    tmp = path.with_name(path.name + ".hdr")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        src.seek(8 + n)
        dst.write(len(text).to_bytes(8, "little") + text)
        shutil.copyfileobj(src, dst, 1 << 24)
    os.replace(tmp, path)


def check_safetensors_header(path: str | os.PathLike) -> None:
    """Refuse files that are not safetensors (pickles, truncated or foreign files)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        n = int.from_bytes(raw, "little")
        if n <= 1 or n > _MAX_HEADER or 8 + n > size:
            raise ValueError(f"{path}: not a safetensors file (bad header length); "
                             "pickled checkpoints are refused, convert them to safetensors")
        try:
            json.loads(f.read(n))
        except ValueError:
            raise ValueError(f"{path}: not a safetensors file (header is not JSON)") from None


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    check_safetensors_header(path)
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
    except SafetensorError as err:
        raise ValueError(f"{path}: corrupt safetensors file ({err})") from None
    return tensors, {k: json.loads(v) for k, v in raw.items()}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def sidecar_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".json")


def pending_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}.pending"


def _written(path: str | os.PathLike) -> Path:
    """Where `path`'s content is now: its pending file while the job runs, else itself."""
    pending = _PENDING.get(Path(path).resolve()) if _PENDING is not None else None
    return pending or Path(path)


def _publish(path: str | os.PathLike) -> None:
    key = Path(path).resolve()
    pending = _PENDING.pop(key, None) if _PENDING is not None else None
    if pending is not None and pending.exists():
        os.replace(pending, path)


@contextmanager
def job_outputs(paths: list[str]) -> Iterator[None]:
    """Run one job's writes: stale outputs, sidecars and pending files are removed first; each
    output appears only after its sidecar (or at the end, for outputs without one)."""
    global _PENDING
    outs = [Path(p) for p in paths if p]
    for p in outs:
        for q in (p, sidecar_path(p), pending_path(p)):
            if q.is_file() or q.is_symlink():  # a folder output is the verb's own business
                q.unlink()
    _PENDING = {p.resolve(): None for p in outs}
    try:
        yield
        for p in outs:
            if _PENDING.get(p.resolve()) is not None:
                _hold()
                _publish(p)
    finally:
        for pending in (_PENDING or {}).values():
            if pending is not None and pending.exists():
                pending.unlink()
        _PENDING = None


def _hold() -> None:
    if os.environ.get(HOLD_ENV):
        time.sleep(float(os.environ[HOLD_ENV]))


def _accelerator() -> dict:
    from clipbd import accel  # imports torch.cuda state only when a sidecar is written

    return accel.describe()


def _numerics() -> dict:
    from clipbd import numerics

    return numerics.describe()


def write_sidecar(path: str | os.PathLike, *, step: str, config: Any, inputs: list[str],
                  code: str, seed: int | None, started: float, extra: dict | None = None) -> dict:
    """Provenance of one artifact, written next to it as `<artifact>.json`.

    Inside `job_outputs` the artifact is then published (renamed onto `path`): the sidecar
    always exists when the artifact does. `inputs` (parents) are recorded with their sha256:
    the chain `clipbd audit` walks. The artifact's own sha256 is computed here, once, with
    its `stat`: the rename that publishes it keeps size, mtime and inode, so consumers can
    trust the hash (`file_sha256`) without reading the file again.
    """
    _hold()
    written = _written(path)
    sha, stat = sha256_file(written), file_stat(written)
    info = {
        "artifact": str(path),
        "sha256": sha,
        "stat": stat if time.time_ns() - stat["mtime_ns"] > RACY_NS else None,
        "step": step,
        "config": config,
        "seed": seed,
        "inputs": {str(p): file_sha256(p) for p in inputs},
        "code": code,
        "packages": package_versions(),
        "wall_time_s": round(time.time() - started, 3),
        "host": platform.node(),
        "accelerator": _accelerator(),
        "numerics": _numerics(),
    }
    if extra:
        info.update(extra)
    write_json(sidecar_path(path), info)
    _publish(path)
    return info

