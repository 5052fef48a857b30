"""benchmarks/report.py decides its verdicts from the numbers it prints."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(train, held):
    metrics = [{"step": i + 1, "reward/accuracy": r} for i, r in enumerate(train)]
    for i, a in enumerate(held):
        metrics[i]["eval/accuracy"] = a
    return {"metrics": metrics}


def test_convergence_verdict_needs_both_curves():
    report = _report()
    both = {"gta": _run([0.2, 0.4], [0.3, 0.5]), "grpo": _run([0.1, 0.2], [0.1, 0.2])}
    assert "**held**" in report.convergence_verdict("d", both)
    one = {"gta": _run([0.2, 0.4], [0.1, 0.1]), "grpo": _run([0.1, 0.2], [0.1, 0.2])}
    assert "**mixed**" in report.convergence_verdict("d", one)
    none = {"gta": _run([0.0, 0.0], [0.0, 0.0]), "grpo": _run([0.0, 0.1], [0.1, 0.2])}
    line = report.convergence_verdict("d", none)
    assert "**not held**" in line and "held-out accuracy GTA 0.000, GRPO 0.150" in line


def test_convergence_verdict_without_held_out_curve_uses_training_reward():
    report = _report()
    runs = {"gta": _run([0.3], []), "grpo": _run([0.1], [])}
    line = report.convergence_verdict("d", runs)
    assert "**held**" in line and "held-out" not in line
