"""`audit --recompute` planning: the jobs read from Snakemake 9's dry-run output (the rebuilds
themselves are tested on a real study in test_audit.py)."""
from clipbd.audit.recompute import parse_dry_run

DRY_RUN = """Building DAG of jobs...
Job stats:
job            count
-----------  -------
fewshot            1
total              2

[Tue Dec  1 10:21:37 2026] Group job fewshot (jobs in lexicogr. order):

    [Tue Dec  1 10:21:37 2026]
    rule fewshot:
        input: results/data/shapes/train.safetensors
        output: results/data/shapes/fewshot/shots~2/seed~0.json
        log: logs/fewshot/shapes/shots~2/seed~0.log
        jobid: 7
        reason: Forced execution
        wildcards: dataset=shapes, shots=2, seed=0
Shell command: python -m clipbd fewshot --cfg '{"seed":0,"shots":2}' --out results/data/shapes/fewshot/shots~2/seed~0.json 2> logs/f.log

[Tue Dec  1 10:21:37 2026]
localrule trigger:
    output: results/triggers/t.safetensors
    log: logs/trigger.log
    jobid: 5
Shell command: python -m clipbd trigger --cfg '{"a": [1, 2]}' --out results/triggers/t.safetensors
rule aggregate:
    input: a.json, b.json
    output: results/tables/metrics.csv
This was a dry-run (flag -n).
"""


def test_parse_dry_run_reads_each_job_and_its_command():
    jobs = parse_dry_run(DRY_RUN)
    assert [j["rule"] for j in jobs] == ["fewshot", "trigger"]  # aggregate: no command shown
    few, trig = jobs
    assert few["input"] == ["results/data/shapes/train.safetensors"]
    assert few["output"] == ["results/data/shapes/fewshot/shots~2/seed~0.json"]
    assert few["log"] == ["logs/fewshot/shapes/shots~2/seed~0.log"]
    assert few["shell"].startswith("python -m clipbd fewshot --cfg '{\"seed\":0,\"shots\":2}'")
    assert few["shell"].endswith("2> logs/f.log")
    assert trig["input"] == [] and trig["output"] == ["results/triggers/t.safetensors"]
    assert trig["shell"] == ("python -m clipbd trigger --cfg '{\"a\": [1, 2]}' "
                             "--out results/triggers/t.safetensors")
