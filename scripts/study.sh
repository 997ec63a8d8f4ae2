#!/usr/bin/env bash
# Quick start 1: install what is needed, then run the embedded study end to end.
# Extra arguments go to snakemake (e.g. -n for a dry run, --configfile other.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup.sh
.venv/bin/snakemake --cores all --workflow-profile workflow/profiles/default "$@"
echo "[study] results/tables/metrics.csv, results/tables/metrics.md, results/figures/overview.png"
echo "[study] total wall time: $(( $(date +%s) - start )) s"
