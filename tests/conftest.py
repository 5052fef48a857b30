import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
DATA_DIR = Path(os.environ.get("GTA_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "bbc_news" / "train.jsonl").is_file():
        pytest.fail(f"test data not found at {DATA_DIR}; set GTA_TEST_DATA to the shared data folder")
    return DATA_DIR


@pytest.fixture(scope="session")
def smol_path() -> str:
    """The real SmolLM2-135M-Instruct folder (converted from GGUF once into $GTA_CACHE)."""
    from gta.models import resolve

    return resolve("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer(smol_path):
    from gta.models import load_tokenizer

    return load_tokenizer(smol_path)


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory, smol_path) -> str:
    """A tiny randomly initialised Llama with SmolLM2's tokenizer."""
    from gta.models import tiny_model

    return str(tiny_model(tmp_path_factory.mktemp("tiny") / "model", vocab_from=smol_path))


def _benchmark_script(name: str):
    """A script of benchmarks/ imported by path (they are scripts, not a package): a fresh module each time."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def paper():
    """benchmarks/paper.py"""
    return _benchmark_script("paper")


@pytest.fixture
def report():
    """benchmarks/report.py"""
    return _benchmark_script("report")
