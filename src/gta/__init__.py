"""gta: GTA (Guess-Think-Answer) supervised-guided reinforcement learning for text classification."""
import os

# Bitwise-reproducible resume: MKL (torch's CPU BLAS) may pick code paths by the memory alignment of its
# operands, which differs between a process that ran from step 0 and one resumed from a checkpoint. On an AMD
# EPYC VM that made killed-and-resumed runs differ from the uninterrupted run in the last bits
# (scripts/crash_test.py: 0/5 trials identical), with no measurable cost to an fp32 GEMM when strict. MKL reads
# it when torch loads (set later in the same process, it had no effect), so it is set here, before torch is
# imported through gta; a user's own setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import gta` stays cheap, torch loads on first use
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    raise AttributeError(name)
