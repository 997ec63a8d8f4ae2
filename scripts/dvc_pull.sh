#!/usr/bin/env bash
# Restore the artifacts of this commit from the DVC remote so that Snakemake has nothing to do.
# Extra arguments go to snakemake (e.g. --configfile my.yaml); DVC_REMOTE=name pulls from another.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dvc ] && export PATH="$PWD/.venv/bin:$PATH"

dvc pull ${DVC_REMOTE:+--remote "$DVC_REMOTE"}
# The artifacts belong to the code and config recorded in dvc.lock; adopt them only if the
# checkout still has that code and config (otherwise Snakemake must decide what to rerun). The
# config is the one these arguments resolve to now (--configfile files, what they extend,
# --config), written over results/study.json, then compared with the lock's.
CLIPBD_STUDY_OUT=results/study.json snakemake --quiet --cores 1 --dry-run "$@" >/dev/null
changed=$(dvc status --json study)
if [ "$changed" != "{}" ]; then
  echo "[dvc_pull] code or config differ from dvc.lock; mtimes not restored: $changed" >&2
  exit 1
fi
# dvc pull writes files in no particular order, and this clone has no Snakemake metadata: touch
# every output in DAG order and record the current params and code fingerprints.
snakemake --quiet --cores 1 --touch --forceall "$@"
snakemake --quiet --cores 1 --dry-run "$@"
