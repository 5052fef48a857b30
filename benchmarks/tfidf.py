"""TF-IDF + logistic regression: the baseline a practitioner would try first, on the protocol's own data.

    python benchmarks/tfidf.py [--dataset NAME ...] [--data-dir DIR] [--json PATH]

For each dataset: word 1-2-gram TF-IDF features (scikit-learn's TfidfVectorizer) and a logistic regression
(LogisticRegression), scikit-learn's defaults otherwise, seeded; fitted once on the protocol's seeded stratified training
subset (benchmarks/paper.py's train_limit, the examples every LLM method trains on) and once on the whole train
split, both scored on the protocol's seeded stratified test subset (the subset `gta eval --test-limit` scores).
No setting is tuned on the test data. Prints accuracy, weighted F1 and seconds; writes them, with each test
example's outcome, as JSON (default benchmarks/results/tfidf.json), which benchmarks/report.py puts beside the LLM
methods.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from paper import DATA, PROTOCOL, ROOT, code_version, label_codes, machine  # benchmarks/paper.py, beside this script

from gta import data

DATASETS = ["sst5", "massive_scenario", "emotion", "bbc_news"]


def fit_and_score(train: list[data.Example], test: list[data.Example], seed: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    t0 = time.perf_counter()
    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit([e.text for e in train], [data.normalize_label(e.label) for e in train])
    gold = [data.normalize_label(e.label) for e in test]
    pred = list(model.predict([e.text for e in test]))
    labels = sorted(set(gold) | set(pred))
    return {"n_train": len(train), "n_test": len(test), "accuracy": accuracy_score(gold, pred),
            "f1_weighted": f1_score(gold, pred, average="weighted", zero_division=0),
            "seconds": time.perf_counter() - t0,
            # per test example, in the test subset's order (paper.py's answer summaries use the same), so
            # report.py can set an LLM run beside this baseline on the same examples (a paired interval)
            "correct": "".join("1" if g == p else "0" for g, p in zip(gold, pred)),
            "gold": label_codes(gold, labels), "predicted": label_codes(pred, labels)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", nargs="+", default=DATASETS, choices=DATASETS)
    ap.add_argument("--data-dir", default=str(DATA))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "tfidf.json"))
    args = ap.parse_args()
    seed = PROTOCOL["seed"]
    out = {"protocol": {k: PROTOCOL[k] for k in ("seed", "train_limit", "test_limit")}, "code": code_version(),
           "machine": machine(), "datasets": {}}
    print(f"{'dataset':<18}{'train':>8}{'n':>7}{'accuracy':>10}{'F1 (w)':>9}{'s':>7}")
    for ds in args.dataset:
        splits = data.load_splits(ds, args.data_dir)
        test = data.stratified_subset(splits["test"], PROTOCOL["test_limit"], seed)
        subset = data.stratified_subset(splits["train"], PROTOCOL["train_limit"], seed)
        out["datasets"][ds] = {}
        for name, train in (("subset", subset), ("full", splits["train"])):
            r = fit_and_score(train, test, seed)
            out["datasets"][ds][name] = r
            print(f"{ds:<18}{r['n_train']:>8}{r['n_test']:>7}{100 * r['accuracy']:>10.2f}{100 * r['f1_weighted']:>9.2f}"
                  f"{r['seconds']:>7.1f}")
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
