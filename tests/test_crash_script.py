"""scripts/crash_test.py end to end, shortened: SIGKILL a tiny seeded GTA run, resume, compare bit for bit."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_killed_and_resumed_runs_equal_the_uninterrupted_run(mech_data):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "crash_test.py"), "--steps", "12",
                          "--min-trials", "3", "--data-dir", str(mech_data)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    found = re.search(r"^(\d+)/(\d+) trials identical$", out.stdout, re.M)
    assert found and found[1] == found[2] and int(found[1]) >= 3, out.stdout
