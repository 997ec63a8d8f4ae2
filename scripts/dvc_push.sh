#!/usr/bin/env bash
# Version the artifacts of a finished run: record them in dvc.lock, push them to the DVC remote.
# Run after the workflow, never inside a job (DVC locks the repository). Extra arguments go to
# the snakemake check (e.g. --configfile my.yaml); DVC_REMOTE=name pushes to another remote.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/dvc ] && export PATH="$PWD/.venv/bin:$PATH"

# Only a complete, up-to-date study is pushed: the lock then matches the code and config beside it.
# The dry run also writes the config it resolved; it becomes results/study.json (dvc.yaml's
# params) only when the push goes ahead, so a refused push leaves the recorded study alone.
pending=results/.study.pending.json
trap 'rm -f "$pending"' EXIT
plan=$(CLIPBD_STUDY_OUT=$pending snakemake --cores 1 --dry-run "$@" 2>&1) || { echo "$plan" >&2; exit 1; }
if ! grep -q "Nothing to be done" <<<"$plan"; then
  echo "[dvc_push] the workflow has jobs left; run it to completion first:" >&2
  grep -A30 "^Job stats:" <<<"$plan" >&2 || echo "$plan" >&2
  exit 1
fi
mv "$pending" results/study.json
dvc commit --force --quiet study
dvc push ${DVC_REMOTE:+--remote "$DVC_REMOTE"}
echo "[dvc_push] pushed; now commit the lock and the study's config with the code:" \
  "git add dvc.lock results/study.json && git commit"
