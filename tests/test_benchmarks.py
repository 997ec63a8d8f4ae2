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


def test_data_scale_quick_reports_peak_rss_per_step(tmp_path):
    """benchmarks/data_scale.py --quick: one JSON line with the peaks and the 4N/N ratio."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "data_scale.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "data_scale.py"), "--quick",
                          "--out", str(out)], capture_output=True, text=True, env=env,
                         timeout=600, check=True)
    line = json.loads(run.stdout.strip().splitlines()[-1])
    assert line == json.loads(out.read_text())
    steps = {"prepare", "poison_test", "features"}
    assert line["sizes"] == {"n": 40, "4n": 160}
    assert set(line["peak_rss_mb"]) == {"n", "4n"}
    assert all(set(v) == steps and min(v.values()) > 0 for v in line["peak_rss_mb"].values())
    assert set(line["rss_ratio_per_step"]) == steps
    assert line["rss_ratio"] == max(line["rss_ratio_per_step"].values())
    assert line["split_mb"]["4n"] > 3.9 * line["split_mb"]["n"]  # the 4N split is 4x as large
