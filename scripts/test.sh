#!/usr/bin/env bash
# Quick start 2: install what is needed, lint (ruff for Python, snakefmt for the Snakemake
# files; settings in pyproject.toml), then run the test suite (unit + real workflow runs).
# The tests run on CLIPBD_TEST_WORKERS pytest-xdist workers (default: one per core; 0 = in
# this process; tests/conftest.py says how they are spread). Extra arguments go to pytest (e.g. -k config,
# -m "not integration").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check --quiet src tests benchmarks
.venv/bin/snakefmt --check Snakefile workflow/Snakefile workflow/rules  # line length: pyproject.toml
exec .venv/bin/python -m pytest -q --durations=40 -n "${CLIPBD_TEST_WORKERS:-$(nproc)}" --dist loadgroup "$@"
