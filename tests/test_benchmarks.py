"""benchmarks/timeline.py: per-rule job seconds from a Snakemake log."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("timeline", ROOT / "benchmarks" / "timeline.py")
timeline = importlib.util.module_from_spec(spec)
spec.loader.exec_module(timeline)

LOG = """Provided cores: 2
[Sun Nov 22 15:10:40 2026]
localrule prepare_data:
    output: a
    jobid: 5
[Sun Nov 22 15:10:40 2026]
rule trigger:
    jobid: 7
[Sun Nov 22 15:10:50 2026]
Finished jobid: 7 (Rule: trigger)
[Sun Nov 22 15:10:50 2026]
rule trigger:
    jobid: 8
[Sun Nov 22 15:10:51 2026]
Finished jobid: 5 (Rule: prepare_data)
[Sun Nov 22 15:11:00 2026]
Finished jobid: 8 (Rule: trigger)
"""


def test_timeline_sums_job_seconds_per_rule():
    s = timeline.summary(timeline.parse(LOG.splitlines()))
    assert s["jobs"] == 3 and s["cores"] == 2 and s["wall_s"] == 20
    assert s["rules"] == {"trigger": {"jobs": 2, "seconds": 20.0},
                          "prepare_data": {"jobs": 1, "seconds": 11.0}}
    assert s["job_s"] == 31 and s["core_use"] == 31 / 40


def test_single_digit_days_parse():
    run = timeline.parse(["[Sun Nov  2 15:11:00 2026]", "[Sun Nov  2 15:11:30 2026]"])
    assert run["wall_s"] == 30 and run["jobs"] == []
