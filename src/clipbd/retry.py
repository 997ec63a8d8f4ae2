"""Retries that grow the resource that ran out, and say why.

A job that SLURM ends for memory (`OUT_OF_MEMORY`) is resubmitted with twice the `mem_mb`; one
ended by its time limit (`TIMEOUT`, `DEADLINE`) with twice the `runtime`; one cancelled, hit by
a node failure or preempted, or one whose command failed (a Python error: more memory would
not help), with the same resources. Growing everything on every retry, whatever the cause,
made a cancelled job's third attempt ask for 3x the memory, more than a node has, and sbatch's
"Requested node configuration is not available" then hid the real cause.

The cause of an earlier attempt comes from SLURM itself. The executor plugin writes each
attempt's log to `.snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log`, so the last
`attempt - 1` job ids there are this job's earlier attempts; each one's state is asked of
`sacct` (accounting), else `scontrol` (the controller keeps finished jobs for MinJobAge), else
read from the log's own last words ("CANCELLED ... DUE TO TIME LIMIT", "oom-kill",
"Exceeded job memory limit"). A job SLURM calls FAILED whose log says it exceeded its memory
counts as OUT_OF_MEMORY: clusters that enforce memory by polling (jobacct_gather with
OverMemoryKill, as the local test cluster does) kill it so. Every retry logs one line with
the history (`history_line`), so the first cause stays in the run's log above any later error.

Without a SLURM record (a local run, or a rule inside a `group:`, whose attempts the plugin
logs per group) the cause is unknown and both resources grow as before: `base x attempt`.

The rules declare `mem_mb=memory(2000)`, `runtime=minutes(30)` (both `scaled`); the Snakefile
tells each such function its rule's name once every rule is defined (`bind`).
"""
from __future__ import annotations

import inspect
import os
import re
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

MEMORY = "mem_mb"
TIME = "runtime"
RAN_OUT = {"OUT_OF_MEMORY": MEMORY, "TIMEOUT": TIME, "DEADLINE": TIME}
UNKNOWN = "UNKNOWN"
LOG_SIGNS = (  # (pattern in a SLURM job log, the state it means), checked in this order
    (re.compile(r"DUE TO TIME LIMIT"), "TIMEOUT"),
    (re.compile(r"oom[-_ ]kill|Exceeded (job|step) memory limit|OUT_OF_MEMORY", re.I),
     "OUT_OF_MEMORY"),
    (re.compile(r"CANCELLED AT"), "CANCELLED"),
)
LOG_DIR = Path(".snakemake") / "slurm_logs"  # the plugin's default `slurm-logdir`


def _run(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return res.stdout if res.returncode == 0 else ""


def state_of(jobid: str, log: Path | None = None) -> str:
    """How SLURM job `jobid` ended: its state word (`OUT_OF_MEMORY`, `TIMEOUT`, `CANCELLED`,
    `FAILED`, ...), or UNKNOWN when neither SLURM nor its log says."""
    out = _run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", jobid]).split()
    state = out[0] if out else UNKNOWN  # e.g. "CANCELLED by 0" -> "CANCELLED"
    if state == UNKNOWN:
        m = re.search(r"\bJobState=(\w+)", _run(["scontrol", "show", "job", "-o", jobid]))
        state = m.group(1) if m else UNKNOWN
    if state not in (UNKNOWN, "FAILED"):
        return state
    # the log tells what SLURM has forgotten, and why a job SLURM calls FAILED ended: memory
    # enforcement by polling (jobacct_gather's OverMemoryKill) ends a job FAILED, not OOM
    said = _log_state(log)
    if state == UNKNOWN:
        return said
    return "OUT_OF_MEMORY" if said == "OUT_OF_MEMORY" else state


def _log_state(log: Path | None, tail: int = 20000) -> str:
    """The state a job log's last `tail` bytes spell (LOG_SIGNS), else UNKNOWN."""
    if not (log and log.is_file()):
        return UNKNOWN
    with open(log, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - tail))
        text = f.read().decode(errors="replace")
    return next((state for pattern, state in LOG_SIGNS if pattern.search(text)), UNKNOWN)


def wildcard_dir(wildcards: Iterable) -> str:
    """The plugin's folder name for a job's wildcards (its `get_job_wildcards`)."""
    return "_".join(str(w) for w in wildcards).replace("/", "_")


def _jobid_key(path: Path) -> tuple[int, int]:
    head, _, task = path.stem.partition("_")  # "123" or an array task "123_4"
    return int(head), int(task or 0)


def _this_job() -> set[str]:
    """Inside a SLURM job (the job's own snakemake evaluates the resources again): its own log,
    which is not an earlier attempt."""
    env = os.environ
    ids = {env.get("SLURM_JOB_ID", "")}
    if env.get("SLURM_ARRAY_JOB_ID"):
        ids.add(f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}")
    return ids - {""}


def earlier_attempts(rule: str, wildcards: Iterable, attempt: int,
                     logdir: Path = LOG_DIR) -> list[tuple[str, str]]:
    """(SLURM job id, state) of this job's `attempt - 1` earlier attempts, oldest first; []
    when SLURM has no record of them (a local run, a group job)."""
    folder = Path(logdir) / f"rule_{rule}" / wildcard_dir(wildcards)
    logs = sorted((p for p in folder.glob("*.log") if re.fullmatch(r"\d+(_\d+)?", p.stem)
                   and p.stem not in _this_job()), key=_jobid_key)
    if attempt <= 1 or len(logs) < attempt - 1:
        return []
    return [(p.stem, state_of(p.stem, p)) for p in logs[-(attempt - 1):]]


def factor(resource: str, attempt: int, states: list[str]) -> int:
    """How much of its base `resource` the attempt asks for, given its earlier attempts' states."""
    if attempt <= 1:
        return 1
    if not states or UNKNOWN in states:
        return attempt  # no cause known: grow both, as plain retries do
    return 2 ** sum(RAN_OUT.get(s) == resource for s in states)


def history_line(rule: str, wildcards: Iterable, attempt: int,
                 earlier: list[tuple[str, str]], asks: dict[str, int]) -> str:
    what = wildcard_dir(wildcards) or "-"
    causes = ", ".join(f"attempt {i} (SLURM job {jid}) ended {state}"
                       for i, (jid, state) in enumerate(earlier, 1)) or "cause unknown"
    grown = ", ".join(f"{k}={v}" for k, v in sorted(asks.items()))
    return f"[clipbd retry] {rule} {what}: {causes}; attempt {attempt} asks {grown}"


class Retries:
    """Looks up each retried job's earlier attempts once and logs the history once."""

    def __init__(self, logdir: Path = LOG_DIR, log: Callable[[str], None] = print):
        self.logdir, self.log = Path(logdir), log
        self._seen: dict[tuple, list[tuple[str, str]]] = {}
        self._said: set[tuple] = set()

    def configure(self, logdir: Path | str | None = None,
                  log: Callable[[str], None] | None = None) -> None:
        """Where the SLURM job logs are (the plugin's `slurm-logdir`) and where history goes."""
        self.logdir = Path(logdir) if logdir else LOG_DIR
        self.log = log or self.log

    def earlier(self, rule: str, wildcards, attempt: int) -> list[tuple[str, str]]:
        key = (rule, wildcard_dir(wildcards), attempt)
        if key not in self._seen:
            self._seen[key] = earlier_attempts(rule, wildcards, attempt, self.logdir)
        return self._seen[key]

    def value(self, rule: str | None, resource: str, base: int, wildcards, attempt: int) -> int:
        earlier = self.earlier(rule, wildcards, attempt) if rule and attempt > 1 else []
        value = base * factor(resource, attempt, [s for _, s in earlier])
        key = (rule, wildcard_dir(wildcards), attempt, resource)
        if attempt > 1 and key not in self._said:
            self._said.add(key)
            self.log(history_line(rule or "?", wildcards, attempt, earlier, {resource: value}))
        return value


RETRIES = Retries()


def scaled(base: int, resource: str, input_factor: float = 0,
           retries: Retries | None = None) -> Callable:
    """A rule's `resource` (mem_mb or runtime): `base` on the first attempt, then grown by what
    ended the earlier attempts. With `input_factor`, the first attempt asks for that many times
    the job's input size (MB, rounded up to 100) when that is more than `base`. The rule's name
    is filled in by `bind`."""
    if resource not in (MEMORY, TIME):
        raise ValueError(f"retry.scaled: resource must be {MEMORY} or {TIME}, not {resource!r}")

    def ask(first: int, wildcards, attempt: int) -> int:
        return (retries or RETRIES).value(grown.rule, resource, first, wildcards, attempt)

    if input_factor:
        def grown(wildcards, input, attempt):
            sized = -(-int(input_factor * input.size_mb) // 100) * 100
            return ask(max(base, sized), wildcards, attempt)
    else:
        def grown(wildcards, attempt):
            return ask(base, wildcards, attempt)

    grown.rule = None
    grown.retry_resource = resource
    grown.__name__ = f"retry_{resource}_{base}" + (f"_x{input_factor:g}" if input_factor else "")
    return grown


def bind(rules: Iterable) -> int:
    """Tell every `scaled` resource function of snakemake's `rules` its rule's name; the count
    bound. Reads snakemake's Resource wrapper (`_evaluator`, pinned snakemake 9)."""
    bound = 0
    for rule in rules:
        for res in rule.resources.values():
            func = getattr(res, "_evaluator", None)  # mem_mb's is wrapped (functools.wraps)
            func = inspect.unwrap(func) if callable(func) else func
            if hasattr(func, "retry_resource"):
                func.rule = rule.name
                bound += 1
    return bound
