"""gta: GTA (Guess-Think-Answer) supervised-guided reinforcement learning for text classification."""
import os

# Bitwise-reproducible resume: MKL (torch's CPU BLAS) may otherwise pick code paths by the memory alignment of
# its operands, which differs in a resumed process (docs/design.md, "Reliability"). MKL reads this when torch
# loads, so it is set before gta imports torch; a user's own setting wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import gta` stays cheap, torch loads on first use
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    if name in ("Trainer", "train"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
