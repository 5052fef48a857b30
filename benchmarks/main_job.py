"""The README's main job, timed as written: the `gta` commands of its "Install and run the main job" block (read
from README.md itself, so the figures and the text cannot drift apart), run one after the other in a fresh
folder, with each command's seconds and each evaluation's figures.

    python benchmarks/main_job.py [--json PATH] [--emulate-no-bf16]

The install line is not run (the packages must already be installed): the minutes are those of the three `gta`
commands. `--emulate-no-bf16` runs them as on a CPU without native bf16 and without AVX-512 (e.g. AMD Zen 3):
torch's bf16 probes answer False (so training and inference take the float32 path `gta` takes there) and torch,
oneDNN and MKL are held to AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS). It is a proxy,
not that CPU: clocks, caches and memory differ. Let nothing else share the CPU while it runs.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper import code_version, gta, gta_env, machine  # noqa: E402  (benchmarks/paper.py: as the paper runs do)

EMULATE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
NO_BF16 = ("import sys, torch; torch.cpu._is_avx512_bf16_supported = lambda: False; "
           "torch.cpu._is_amx_tile_supported = lambda: False; from gta.cli import main; sys.exit(main())")


def readme_commands(readme: Path = ROOT / "README.md") -> list[list[str]]:
    """The `gta ...` commands of the README's main-job block, each as an argument list (without `gta`)."""
    text = readme.read_text()
    section = text.split("## Install and run the main job", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if block is None:
        raise SystemExit("README.md: no ```bash block under '## Install and run the main job'")
    joined = block.group(1).replace("\\\n", " ")
    commands = [shlex.split(part) for part in re.split(r"&&|\n", joined) if part.strip()]
    gta = [c[1:] for c in commands if c and c[0] == "gta"]
    if not gta or gta[0][0] != "train":
        raise SystemExit("README.md: the main-job block has no `gta train` command first")
    return gta


def run(args: list[str], folder: Path, emulate: bool) -> float:
    env = {**gta_env(), **(EMULATE_ENV if emulate else {})}  # this checkout's src/, whose commit is recorded
    cmd = [sys.executable, "-c", NO_BF16, *args] if emulate else gta(*args)
    print("$ gta " + shlex.join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=folder, env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument("--emulate-no-bf16", action="store_true",
                        help="as on a CPU without bf16 or AVX-512 (float32, AVX2): a proxy for AMD Zen 3")
    parser.add_argument("--folder", type=Path, default=None, help="run here (default: a new temporary folder)")
    args = parser.parse_args()
    commands = readme_commands()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="gta-main-job-"))
    folder.mkdir(parents=True, exist_ok=True)
    record = {"code": code_version(), "machine": machine(), "emulate_no_bf16": args.emulate_no_bf16, "commands": []}
    if args.emulate_no_bf16:
        record["machine"]["bf16_native"] = False  # as the runs saw it
    try:
        for command in commands:
            seconds = run(command, folder, args.emulate_no_bf16)
            entry = {"command": "gta " + shlex.join(command), "seconds": round(seconds, 1)}
            if command[0] == "eval":
                out = command[command.index("--output") + 1] if "--output" in command else command[1]
                metrics = json.loads((folder / out / "eval" / "metrics.json").read_text())
                entry.update({k: metrics[k] for k in ("n", "accuracy", "f1_weighted", "exact_format_rate",
                                                       "invalid_rate")})
            record["commands"].append(entry)
    finally:
        if args.folder is None:
            shutil.rmtree(folder, ignore_errors=True)
    record["minutes"] = round(sum(c["seconds"] for c in record["commands"]) / 60, 1)
    record["train_minutes"] = round(record["commands"][0]["seconds"] / 60, 1)
    print(json.dumps(record, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
