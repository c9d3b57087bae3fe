#!/usr/bin/env bash
# The prepared GPU check (issue #23): one command on a machine with NVIDIA GPUs, ≤ 8 minutes, from a checkout alone
# (nothing git-ignored, no model download: it builds its data and models from configs). scripts/gpu_check.py says
# what it runs; it prints one table and exits 1 when a step failed.
#
#   bash scripts/gpu_check.sh [gpu_check.py options, e.g. --work /tmp/check --processes 2]
#
# Python: $PYTHON, .venv/bin/python or python3, the first whose torch sees a GPU and which has the project's
# dependencies at the versions pyproject.toml asks (the checkout goes on PYTHONPATH: nothing to install). Otherwise a
# virtual environment, $VRLHF_GPU_VENV (default ~/.cache/vrlhf-gpu-venv): over a python3 whose torch sees a GPU (its
# packages visible) or else with torch from PyPI's default build (the CUDA one on Linux), plus the project's other
# dependencies. Without network, point pip at wheels: PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi -L); the same steps, tiny, on a CPU: python scripts/gpu_check.py --cpu --smoke" >&2
  exit 2
fi

problem() { "$1" scripts/gpu_check.py --python_problem 2>&1 | tail -1 || true; }  # empty: this Python will do

python=""
for candidate in ${PYTHON:-} .venv/bin/python "$(command -v python3 || true)"; do
  if [ -x "$candidate" ]; then
    why=$(problem "$candidate")
    if [ -z "$why" ]; then python=$candidate; break; fi
    echo "gpu_check: not $candidate: $why"
  fi
done
if [ -z "$python" ]; then
  venv=${VRLHF_GPU_VENV:-$HOME/.cache/vrlhf-gpu-venv}
  if [ ! -x "$venv/bin/python" ]; then
    base=$(command -v python3)
    if "$base" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
      "$base" -m venv --system-site-packages "$venv"  # keep the CUDA torch this machine has
    else
      "$base" -m venv "$venv"
    fi
  fi
  pip="$venv/bin/python -m pip install -q --disable-pip-version-check"
  "$venv/bin/python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null || $pip torch
  "$venv/bin/python" scripts/gpu_check.py --requirements > "$venv/requirements.txt"
  $pip -r "$venv/requirements.txt"
  python=$venv/bin/python
  why=$(problem "$python")
  if [ -n "$why" ]; then echo "gpu_check: cannot set up Python in $venv: $why" >&2; exit 2; fi
fi
echo "gpu_check: $python"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$python" scripts/gpu_check.py "$@"
