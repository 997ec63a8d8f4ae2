#!/usr/bin/env bash
# Install everything clipbd needs into .venv/ (idempotent; a no-op when nothing changed).
# Needs: Debian/Ubuntu with python3 >= 3.11 and python3-venv; root (or sudo) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  echo "[setup] installing Debian package dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
STAMP=.venv/.clipbd-installed
WANT=$(cat requirements.lock pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[setup] installing Python packages into .venv (CPU torch 2.13.0)"
  .venv/bin/pip install -q -r requirements.lock
  .venv/bin/pip install -q --no-deps -e .
  # what scripts/test.sh runs besides pytest (not job dependencies): the linters ruff and
  # snakefmt (+ its black), pytest-xdist (+ its execnet) for the test workers
  .venv/bin/pip install -q ruff==0.17.6 snakefmt==2.1.0 black==26.10.1 pytest-xdist==3.8.0 \
    execnet==2.1.2
  echo "$WANT" > "$STAMP"
fi
