"""gta export: a clean Hugging Face folder that plain transformers and gta.Classifier load, giving the run's
predictions, with a model card that names the labels and the metrics."""
import json
import re
from pathlib import Path

import pytest
import torch

from gta.classifier import Classifier
from gta.cli import main

TEXTS = ["i feel happy today", "this makes me so angry", "what a surprise"]


def train(tmp_path, tiny_path, toy_data, name, *extra):
    run = tmp_path / name
    assert main(["train", "--method", "gta", "--model", tiny_path, "--dataset", "toy", "--data-dir", str(toy_data),
                 "--train-limit", "8", "--max-steps", "1", "--batch-size", "2", "--num-generations", "2",
                 "--num-iterations", "1", "--max-completion-length", "8", "--no-bf16", "--max-prompt-length", "160",
                 "--learning-rate", "1e-2", "--output", str(run), "--no-progress", *extra]) == 0
    return run


def test_export_full_weights_loads_in_transformers_and_gta_with_the_runs_predictions(tmp_path, tiny_path, toy_data,
                                                                                       capsys):
    from transformers import AutoModelForCausalLM

    run = train(tmp_path, tiny_path, toy_data, "run")
    assert main(["eval", str(run), "--test-limit", "6"]) == 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    out = tmp_path / "exported"
    assert main(["export", str(run), str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "gta.json", "README.md"} <= names
    assert not names & {"train_state", "scheduler.pt", "rng.pt", "trainer_state.json"}
    assert json.loads((out / "generation_config.json").read_text()).get("do_sample") in (False, None)
    info = json.loads((out / "gta.json").read_text())
    labels = json.loads((run / "labels.json").read_text())
    assert info["labels"] == labels and info["template"] == "gta" and not info["adapter"]
    card = (out / "README.md").read_text()
    assert all(f"`{lab}`" in card for lab in labels)
    assert f"accuracy {metrics['accuracy']:.4f}" in card and "On 6 examples of the test split" in card

    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ours = Classifier.from_pretrained(run, device="cpu")
    theirs = Classifier.from_pretrained(out, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ours.model.state_dict().values()))
    explained = ours.predict(TEXTS, explain=True)
    assert theirs.predict(TEXTS, explain=True) == explained

    # the model card's transformers-only recipe, run as written, reads what gta's decoding reads
    recipe = re.search(r"## Use with transformers alone\n\n```python\n(.*?)```", card, re.S).group(1)
    scope = {}
    exec(recipe.replace('"exported/', f'"{out}/').replace('"exported"', f'"{out}"')
         .replace('text = "the text to classify"', f"text = {TEXTS[0]!r}"), scope)
    assert scope["out"] == explained[0]["output"]
    assert scope["label"] == explained[0]["label"] or explained[0]["label"] is None

    # docs/your-data.md's pipeline recipe, run as written, parses what gta parses
    doc = (Path(__file__).resolve().parents[1] / "docs" / "your-data.md").read_text()
    recipe = re.search(r"```python\n(import json\nfrom transformers import pipeline.*?)```", doc, re.S).group(1)
    scope = {}
    exec(recipe.replace('"ticket-classifier', f'"{out}').replace('"The app crashes when I open settings"',
                                                                 repr(TEXTS[0])), scope)
    assert scope["out"] == explained[0]["output"]
    assert scope["label"] == explained[0]["label"]

    capsys.readouterr()
    assert main(["export", str(run), str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(run), str(tmp_path / "m"), "--merge-lora"]) == 2
    assert "no LoRA adapter to merge" in capsys.readouterr().err


def test_export_merged_lora_and_adapter(tmp_path, tiny_path, toy_data):
    from transformers import AutoModelForCausalLM

    run = train(tmp_path, tiny_path, toy_data, "lora", "--lora-r", "4")
    merged, adapter = tmp_path / "merged", tmp_path / "adapter"
    assert main(["export", str(run), str(merged), "--merge-lora"]) == 0
    assert main(["export", str(run), str(adapter)]) == 0
    assert (adapter / "adapter_model.safetensors").is_file() and json.loads((adapter / "gta.json").read_text())["adapter"]
    plain = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    assert not any("lora" in n for n in plain.state_dict())
    ours = Classifier.from_pretrained(run, device="cpu")
    ids = ours.tokenizer("i feel happy today", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want = ours.model(ids).logits
        assert torch.allclose(plain(ids).logits, want, atol=1e-4)
        assert torch.allclose(Classifier.from_pretrained(adapter, device="cpu").model(ids).logits, want, atol=1e-6)
    assert Classifier.from_pretrained(merged, device="cpu").predict(TEXTS) == ours.predict(TEXTS)


def test_from_pretrained_of_a_missing_hub_id_says_so_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a hub repository"):
        Classifier.from_pretrained("nobody/no-such-classifier")
