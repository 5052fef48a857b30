"""A fixed tiny-model run of each method, pinned: refactors of the training step must not change its numbers.

The per-step losses, rewards, KL and gradient norms and a digest of the final weights of a 3-step run (one
process, float32) are compared with tests/fixtures/pinned_runs.json, which holds them per kind of CPU (vendor,
family, model). On a CPU of a kind in the file they must agree to 1e-6 (metrics.jsonl keeps 6 decimals); on another
CPU, whose BLAS rounds differently in the last bits (and AdamW turns a noise-level gradient into a full-size step),
to 1e-3 with the first kind's values, which still catches a change to the step (e.g. the SFT reduction moves
loss/sft by a factor of the target length).
After a change that is meant to change the numbers: `python tests/test_pinned_runs.py --write` (the file then
holds this CPU's values only). To add this CPU's values from code whose numbers are pinned (check out the commit
that wrote the file first): `python tests/test_pinned_runs.py --add`.
"""
import json
import math
import sys
from pathlib import Path

import pytest

from gta.config import TrainConfig
from gta.trainer import Trainer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pinned_runs.json"
METHODS = ["sft", "grpo", "gta", "gta-rl"]
KEYS = ["loss/sft", "loss/rl", "reward/total", "kl", "clip_fraction", "grad_norm", "grad_norm/sft", "grad_norm/rl",
        "conflict/cosine", "conflict/sft_dropped", "completion_length"]


def varied_reward(text, gold, template, **kw):
    """Rewards that differ within a group (a random tiny model never writes the format): an RL signal."""
    r = float(len(text) % 3)
    return {"total": r, "format": 0.0, "accuracy": r / 2, "guess": 0.0}


def cpu_id() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()[:12]
    except OSError:
        return "unknown"
    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return f"{info.get('vendor_id', '')} family {info.get('cpu family', '')} model {info.get('model', '')}"


def pinned_run(method: str, model: str, data: str, output: Path) -> dict:
    cfg = TrainConfig(method=method, model=model, dataset="toy", data_dir=data, train_limit=8, max_steps=3,
                      batch_size=2, micro_batch_size=1, num_generations=3, num_iterations=2, max_completion_length=10,
                      max_prompt_length=160, learning_rate=1e-3, bf16=False, output=str(output), ref_sync_steps=2,
                      save_every=100)
    trainer = Trainer(cfg, progress=False, reward_fn=varied_reward)
    trainer.train()
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    weights = [p.detach().double() for p in trainer.model.parameters()]
    return {"steps": [{k: r[k] for k in KEYS if k in r} for r in rows],
            "weights_sum": float(sum(w.sum() for w in weights)),
            "weights_sq": float(sum(w.pow(2).sum() for w in weights))}


@pytest.mark.parametrize("method", METHODS)
def test_a_fixed_run_gives_the_pinned_numbers(method, tiny_path, toy_data, tmp_path):
    runs = json.loads(FIXTURE.read_text())["runs"]
    cpu = cpu_id() if cpu_id() in runs else next(iter(runs))
    expected, tol = runs[cpu][method], 1e-6 if cpu == cpu_id() else 1e-3
    got = pinned_run(method, tiny_path, str(toy_data), tmp_path / "run")
    assert len(got["steps"]) == len(expected["steps"])
    for step, (g, e) in enumerate(zip(got["steps"], expected["steps"]), 1):
        assert g.keys() == e.keys(), step
        for k in e:
            assert math.isclose(g[k], e[k], rel_tol=tol, abs_tol=1e-6), (method, step, k, g[k], e[k])
    for k in ("weights_sum", "weights_sq"):
        assert math.isclose(got[k], expected[k], rel_tol=tol / 10), (method, k, got[k], expected[k])


if __name__ == "__main__" and sys.argv[1:] in (["--write"], ["--add"]):
    import tempfile

    from gta.models import resolve, tiny_model

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import make_toy_data

    with tempfile.TemporaryDirectory() as tmp:
        model = str(tiny_model(Path(tmp) / "tiny", vocab_from=resolve("smollm2-135m")))
        data = make_toy_data(Path(tmp) / "toy")
        values = {m: pinned_run(m, model, str(data), Path(tmp) / m) for m in METHODS}
    runs = json.loads(FIXTURE.read_text())["runs"] if sys.argv[1] == "--add" else {}
    runs[cpu_id()] = values
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    print(f"wrote {FIXTURE} ({', '.join(runs)})")
