"""gta: GTA (Guess-Think-Answer) supervised-guided reinforcement learning for text classification."""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import gta` stays cheap, torch loads on first use
    if name == "Classifier":
        from .classifier import Classifier

        return Classifier
    if name == "TrainConfig":
        from .config import TrainConfig

        return TrainConfig
    raise AttributeError(name)
