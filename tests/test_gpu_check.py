"""scripts/gpu_check.py, the GPU acceptance check, runs on a CPU with tiny models and prints its table: it is known to
work before a GPU is lent."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def test_gpu_check_runs_on_cpu_with_tiny_models(tmp_path):
    out = tmp_path / "check.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--tiny", "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for heading in ("A. pinned tiny-model runs", "B. one GTA step", "C. largest G x completion length"):
        assert heading in r.stdout
    res = json.loads(out.read_text())
    assert [row["method"] for row in res["pinned"]] == ["sft", "grpo", "gta", "gta-rl"]
    assert all(row["ok"] for row in res["pinned"])  # CPU against CPU: the same run
    assert [(row["training"], row["checkpointing"]) for row in res["steps"]] == [
        ("full", False), ("full", True), ("lora", False), ("lora", True)]
    assert all(row["result"] == "ok" and row["update_tok_s"] > 0 for row in res["steps"])
    assert res["steps"][-1]["generate_tok_s"] > 0
    assert res["fit"] and all(row["result"] == "fits" for row in res["fit"])
    vllm, = res["vllm"]  # part D: a vLLM step where vLLM is installed (tests/test_vllm.py), else skipped, saying why
    assert vllm["result"] == "ok" or vllm["result"].startswith("skipped (vLLM is not installed")


def test_gpu_check_without_cuda_says_what_to_do():
    import torch

    if torch.cuda.is_available():
        return
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--device cpu --tiny" in r.stderr
