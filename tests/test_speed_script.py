"""benchmarks/speed.py end to end at a tiny shape: it runs in the precision gta trains in on this CPU and writes
every figure the speed issue names. (Its figures at this shape mean nothing; the test checks that the script
works, on whichever kind of CPU runs the suite.)"""
import json
import subprocess
import sys
from pathlib import Path

import torch

from gta.models import bf16_supported

ROOT = Path(__file__).resolve().parents[1]


def test_speed_script_writes_every_figure_in_this_cpus_precision(tmp_path, mech_data, smol_path):
    out = tmp_path / "speed.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--prompts", "1", "--generations",
                          "2", "--prompt-tokens", "100", "--new-tokens", "2", "--repeats", "1", "--steps", "0",
                          "--variable-new-tokens", "2", "--data-dir", str(mech_data), "--json", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    res = json.loads(out.read_text())
    prec = "bf16" if bf16_supported(torch.device("cpu")) else "fp32"
    assert res["precision"] == prec and res["machine"]["bf16_native"] == (prec == "bf16")
    assert res[f"{prec}_matmul_gflops"] > 0 and len(res["matmul_gflops_readings"]) == 1
    for key in ("rollout_vs_plain", "update_vs_plain", "flops_fraction", "useful_gflops"):
        assert res[key] > 0, key
    assert ("rollout_vs_plain_bf16" in res) == (prec == "bf16")  # plain generate under bf16 autocast: bf16 CPUs only
    assert set(res["rollout_tokens_per_s"]) == {"rollout_ours", "rollout_ours_no_logprobs", "rollout_plain_fp32"} | (
        {"rollout_plain_bf16"} if prec == "bf16" else set())
    assert res["rollout_logprobs_cost"] > 0 and ("fp32_head_cost" in res) == (prec == "bf16")
    var = res["variable_length"]
    assert var[f"rollout_vs_plain_{prec}"] > 0 and var["update_vs_plain"] > 0
    assert f"{prec} matmul ceiling" in run.stdout
