"""Smoke runs of every method on a tiny random model, accumulation equivalence and checkpoints."""
import json

import pytest
import torch
from safetensors.torch import load_file

from gta.classifier import Classifier
from gta.config import ConfigError, TrainConfig
from gta.trainer import Trainer


def cfg(tmp_path, tiny_path, mech_data, **kw):
    base = dict(model=tiny_path, dataset="emotion", data_dir=str(mech_data), train_limit=8, max_steps=2,
                batch_size=2, micro_batch_size=1, num_generations=3, num_iterations=2, max_completion_length=12,
                max_prompt_length=160, learning_rate=1e-3, bf16=False, output=str(tmp_path / "run"),
                save_every=1, eval_every=2, eval_limit=4)
    base.update(kw)
    return TrainConfig(**base)


def varied_reward(text, gold, template, **kw):
    """A reward that varies within groups even for a random model, so the RL path produces gradients."""
    r = float(len(text) % 3)
    return {"total": r, "format": 0.0, "accuracy": 0.0, "guess": 0.0}


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method", ["sft", "grpo", "gta", "gta-rl"])
def test_smoke_each_method(tmp_path, tiny_path, mech_data, method):
    c = cfg(tmp_path, tiny_path, mech_data, method=method)
    trainer = Trainer(c, progress=False, reward_fn=varied_reward)
    before = params(trainer.model)
    trainer.train()
    after = params(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before), "no parameter changed"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert all(v == v and abs(v) != float("inf") for v in r.values()), r  # finite
    keys = set(rows[0])
    if method == "sft":
        assert "loss/sft" in keys
    else:
        assert {"reward/total", "reward/format", "reward/accuracy", "loss/rl", "kl", "clip_fraction",
                "completion_length", "tokens_per_s", "step_time_s", "groups/informative", "entropy", "kl_max",
                "completions/truncated", "completions/placeholder_answer", "completions/placeholder_think",
                "rollout/logprob_gap"} <= keys
        assert all(0 < r["entropy"] <= 11 for r in rows)  # a random tiny model: near log(49152) = 10.8
        assert all(0 <= r["groups/informative"] <= 1 for r in rows)
    if method in ("gta", "gta-rl"):
        assert "guess/accuracy" in keys
    if method == "gta":
        assert {"loss/sft", "conflict/cosine", "conflict/sft_dropped", "conflict/sft_projected", "guess_s",
                "grad_norm/sft", "grad_norm/rl", "rl_share", "conflict/update_cosine_rl"} <= keys
        assert all(0 <= r["rl_share"] <= 1 + 1e-6 and r["grad_norm/sft"] > 0 for r in rows)
        assert all(0 < r["guess_s"] < r["step_time_s"] for r in rows)
    else:
        assert "guess_s" not in keys
    assert "eval/accuracy" in rows[1]
    # the checkpoint holds the trained weights, loadable by transformers and by the Classifier
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    saved = load_file(ckpt / "model.safetensors")
    assert all(torch.equal(saved[n], after[n]) for n in saved)
    clf = Classifier.from_pretrained(tmp_path / "run", device="cpu")
    assert all(torch.equal(p, after[n]) for n, p in clf.model.named_parameters() if n in saved)
    out = clf.predict(["i feel great today"], explain=True)
    assert set(out[0]) == {"label", "guess", "think", "output"}


def test_gradient_accumulation_equivalence(tmp_path, tiny_path, mech_data):
    """A step of 4 prompts: 2 micro-batches of 2 give the same gradients (g_RL, g_SFT, their combination) as
    1 micro-batch of 4. The gradients handed to the optimizer are compared, before Adam (whose first step is
    lr * sign(g) and would hide or amplify differences)."""
    results = []
    for micro in (2, 4):
        c = cfg(tmp_path / f"m{micro}", tiny_path, mech_data, method="gta", batch_size=4, micro_batch_size=micro,
                max_steps=1, eval_every=0)
        t = Trainer(c, progress=False, reward_fn=varied_reward)
        captured = []
        t.update = lambda grads: captured.append([g.clone() for g in grads]) or 1.0
        m = t.rl_step(t.plan.batch_indices(0), 0)
        results.append((captured, m))
    (a, ma), (b, mb) = results
    assert len(a) == len(b) == 2  # mu = 2 updates
    for ga, gb in zip(a, b):
        scale = max(float(g.abs().max()) for g in ga)
        assert scale > 0
        for x, y in zip(ga, gb):
            assert torch.allclose(x, y, rtol=1e-4, atol=1e-6 * scale)
    for key in ("loss/rl", "loss/sft", "conflict/cosine", "conflict/sft_dropped", "reward/total"):
        assert ma[key] == pytest.approx(mb[key], rel=1e-5, abs=1e-7), key


def test_lora_run_saves_adapter_and_reference_refresh(tmp_path, tiny_path, mech_data):
    c = cfg(tmp_path, tiny_path, mech_data, method="gta", lora_r=4, ref_sync_steps=1, eval_every=0)
    t = Trainer(c, progress=False, reward_fn=varied_reward)
    t.train()
    ckpt = tmp_path / "run" / "checkpoints" / "step-000002"
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").is_file()
    # refreshed at the last step: the reference equals the current adapter
    assert all(torch.equal(r, p) for r, p in zip(t.reference, t.params))
    clf = Classifier.from_pretrained(tmp_path / "run", device="cpu")
    assert hasattr(clf.model, "peft_config")
    adapter = load_file(ckpt / "adapter_model.safetensors")
    loaded = {n.replace(".default", ""): p for n, p in clf.model.named_parameters() if "lora_" in n}
    trained = {n.replace(".default", ""): p for n, p in t.model.named_parameters() if "lora_" in n}
    assert adapter.keys() == loaded.keys() == trained.keys() and len(adapter) > 0
    assert all(torch.equal(adapter[n], loaded[n]) and torch.equal(adapter[n], trained[n]) for n in adapter)


def test_lora_resume_continues_to_the_same_adapter(tmp_path, tiny_path, mech_data):
    make = lambda d, **kw: Trainer(cfg(d, tiny_path, mech_data, method="gta", lora_r=4, max_steps=3, eval_every=0),  # noqa: E731
                                   progress=False, reward_fn=varied_reward, **kw)
    full = make(tmp_path / "a")
    full.train()
    make(tmp_path / "b").train(until=2)
    resumed = make(tmp_path / "b", resume=True)
    assert resumed.step == 2
    resumed.train()
    a, b = params(full.model), params(resumed.model)
    assert a.keys() == b.keys() and all("lora_" in n for n in a)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    assert any(not torch.equal(a[n], params(make(tmp_path / "c").model)[n]) for n in a)  # trained, not fresh


def test_resume_continues_and_matches_uninterrupted(tmp_path, tiny_path, mech_data):
    full = Trainer(cfg(tmp_path / "a", tiny_path, mech_data, method="gta", max_steps=3, eval_every=0), progress=False,
                   reward_fn=varied_reward)
    full.train()
    part = Trainer(cfg(tmp_path / "b", tiny_path, mech_data, method="gta", max_steps=3, eval_every=0), progress=False,
                   reward_fn=varied_reward)
    part.train(until=2)  # as if killed after the step-2 checkpoint
    resumed = Trainer(cfg(tmp_path / "b", tiny_path, mech_data, method="gta", max_steps=3, eval_every=0),
                      resume=True, progress=False, reward_fn=varied_reward)
    assert resumed.step == 2
    resumed.train()
    a, b = params(full.model), params(resumed.model)
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)
    read = lambda d: [json.loads(x)["reward/total"] for x in (d / "run" / "metrics.jsonl").read_text().splitlines()]
    assert read(tmp_path / "a") == read(tmp_path / "b")


def test_existing_run_folder_is_not_overwritten(tmp_path, tiny_path, mech_data):
    Trainer(cfg(tmp_path, tiny_path, mech_data, method="sft", max_steps=1, eval_every=0), progress=False).train()
    with pytest.raises(ConfigError, match="already holds a run"):
        Trainer(cfg(tmp_path, tiny_path, mech_data, method="sft", max_steps=1, eval_every=0), progress=False)
    with pytest.raises(ConfigError, match="changed config"):
        Trainer(cfg(tmp_path, tiny_path, mech_data, method="sft", max_steps=1, eval_every=0, learning_rate=0.5),
                resume=True, progress=False)


def test_data_seed_keeps_the_subsets_while_the_training_seed_changes(tmp_path, tiny_path, mech_data):
    def made(name, **kw):
        return Trainer(cfg(tmp_path / name, tiny_path, mech_data, method="sft", train_limit=12, **kw), progress=False)

    seed0, seed1, seed1_data0 = made("a", seed=0), made("b", seed=1), made("c", seed=1, data_seed=0)
    texts = lambda t: [ex.text for ex in t.train_examples]
    held = lambda t: [ex.text for ex in t.eval_examples]
    assert texts(seed1_data0) == texts(seed0) and held(seed1_data0) == held(seed0)
    assert texts(seed1) != texts(seed0)  # without --data-seed, --seed picks the subsets too
    assert seed1_data0.plan.batch_indices(0) != seed0.plan.batch_indices(0)  # the training order follows --seed


def test_completions_log_has_each_steps_samples_and_is_cut_back_on_resume(tmp_path, tiny_path, mech_data):
    make = lambda **kw: Trainer(cfg(tmp_path, tiny_path, mech_data, method="gta", max_steps=3, eval_every=0,  # noqa: E731
                                    log_completions=4, num_generations=3), progress=False,
                                reward_fn=varied_reward, **kw)
    make().train(until=2)
    path = tmp_path / "run" / "completions.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] * 4 + [2] * 4
    assert set(rows[0]) == {"step", "example", "sample", "gold", "guess", "think", "answer", "reward/total",
                            "reward/format", "reward/accuracy", "guess_correct", "advantage", "truncated",
                            "completion"}
    assert [r["sample"] for r in rows[:4]] == [0, 0, 1, 1]  # spread over the step's 2 prompts first
    assert all(r["completion"].startswith("<guess>") and r["reward/total"] == len(r["completion"]) % 3 for r in rows)
    with path.open("a") as f:  # as if killed after logging step 3, before its checkpoint
        f.write(json.dumps({"step": 3, "example": -1}) + "\n" + '{"step": 3, "cut sh')
    resumed = make(resume=True)
    resumed.train()
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1] * 4 + [2] * 4 + [3] * 4 and all(r["example"] >= 0 for r in rows)


def test_start_up_summary_says_prompts_and_completions_per_step(tmp_path, tiny_path, mech_data, capsys):
    Trainer(cfg(tmp_path, tiny_path, mech_data, method="gta", batch_size=2, num_generations=3), progress=False)
    out = capsys.readouterr().out
    assert "2 prompts x G=3 = 6 completions per step over 1 process (2 prompts each), 2 steps from step 0" in out
    assert "float32" in out and "8 training examples" in out and str(tmp_path / "run") in out


def test_no_progress_prints_a_plain_line_every_log_every_steps(tmp_path, tiny_path, mech_data, capsys):
    c = cfg(tmp_path, tiny_path, mech_data, method="grpo", max_steps=3, log_every=2, eval_every=0, save_every=10)
    Trainer(c, progress=False, reward_fn=varied_reward).train()
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("[gta] step ")]
    assert [x.split()[2] for x in lines] == ["2/3", "3/3"]  # every 2 steps, and the last
    assert all("reward/total" in x and "loss/rl" in x and "s/step" in x for x in lines)


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant_with_warmup"])
def test_the_learning_rate_follows_transformers_get_scheduler(tmp_path, tiny_path, mech_data, kind):
    from transformers import get_scheduler

    c = cfg(tmp_path, tiny_path, mech_data, method="sft", max_steps=6, warmup_ratio=0.34, lr_scheduler_type=kind,
            eval_every=0, save_every=10)
    Trainer(c, progress=False).train()
    logged = [json.loads(x)["lr"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=c.learning_rate)
    sched = get_scheduler(kind, opt, num_warmup_steps=2, num_training_steps=6)
    expected = []
    for _ in range(6):
        opt.step()
        sched.step()
        expected.append(sched.get_last_lr()[0])
    assert logged == pytest.approx(expected, abs=1e-6)  # metrics.jsonl keeps 6 decimals


def test_instructions_and_system_prompt_reach_every_method_and_the_runs_eval_and_predict(tmp_path, tiny_path,
                                                                                       mech_data, monkeypatch):
    from gta import prompts
    from gta.cli import main

    task, system = "Classify the feeling of the tweet.", "You are terse."
    for method in ("sft", "grpo", "gta", "gta-rl"):
        t = Trainer(cfg(tmp_path / method, tiny_path, mech_data, method=method, instructions=task,
                        system_prompt=system), progress=False)
        assert all(task in p and system in p and "The labels: " in p for p in t.prompts), method
    run = tmp_path / "trained"
    Trainer(cfg(tmp_path / "sft2", tiny_path, mech_data, method="sft", instructions=task, system_prompt=system,
                output=str(run), max_steps=1), progress=False).train()
    seen = []
    make = prompts.make_prompts
    monkeypatch.setattr(prompts, "make_prompts", lambda *a, **k: seen.append(make(*a, **k)[0]) or make(*a, **k))
    assert Classifier.from_pretrained(run).predict("i feel fine") in (None, "sadness", "joy", "love", "anger", "fear",
                                                                      "surprise")
    assert main(["eval", str(run), "--dataset", "emotion", "--data-dir", str(mech_data), "--test-limit", "4"]) == 0
    assert len(seen) == 2 and all(task in p and system in p for batch in seen for p in batch)


def test_save_best_keeps_the_best_evaluation_beside_the_last_checkpoints(tmp_path, tiny_path, mech_data, monkeypatch):
    import json

    scores = iter([0.2, 0.5, 0.3, 0.4, 0.45, 0.6])  # evaluations at steps 1-6: best at 2, then at 6 after resuming
    monkeypatch.setattr(Trainer, "evaluate", lambda self: {"eval/accuracy": next(scores), "eval/f1": 0.0})
    run = tmp_path / "run"
    c = cfg(tmp_path, tiny_path, mech_data, method="sft", max_steps=4, eval_every=1, save_every=3,
            keep_checkpoints=1, save_best="eval/accuracy")
    Trainer(c, progress=False).train()
    ck = run / "checkpoints"
    best = json.loads((ck / "best.json").read_text())
    assert (best["step"], best["metric"], best["value"]) == (2, "eval/accuracy", 0.5)
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-000002", "step-000004"]  # best + the last one
    # resumed and trained longer: 0.45 does not beat the recorded 0.5, 0.6 does, and step 2 then goes
    Trainer(TrainConfig(**{**c.to_dict(), "max_steps": 6}), resume=True, progress=False).train()
    best = json.loads((ck / "best.json").read_text())
    assert (best["step"], best["value"]) == (6, 0.6)
    assert sorted(p.name for p in ck.glob("step-*")) == ["step-000006"]
    with pytest.raises(ConfigError, match="--save-best needs --eval-every"):
        TrainConfig(save_best="eval/f1")


def test_reward_fn_from_a_file_or_a_module_gta_and_trl_style_reaches_the_advantages(tmp_path, tiny_path, mech_data,
                                                                                     monkeypatch, capsys):
    """--reward-fn file.py:function (gta's signature) and module:function (TRL's): the completions log's rewards are
    the function's, and the advantages are those rewards normalised within each group."""
    from gta.cli import main
    from gta.rewards import reward as gta_reward

    (tmp_path / "mine.py").write_text(
        "def score(completion, gold, template, labels, truncated=False):\n"
        "    return {'total': float(len(completion) % 3), 'format': 0.0, 'accuracy': 0.0, 'guess': 0.0}\n"
        "def trl_style(prompts, completions, label, text, **kw):\n"
        "    assert len(prompts) == len(completions) == len(label) == len(text)\n"
        "    assert all(isinstance(p, str) and p for p in prompts) and all(t for t in text)\n"
        "    return [float(len(c) % 2) for c in completions]\n")
    monkeypatch.chdir(tmp_path)  # module:function imports from the current folder
    common = ["train", "--method", "gta", "--model", tiny_path, "--dataset", "emotion", "--data-dir", str(mech_data),
              "--train-limit", "8", "--max-steps", "1", "--batch-size", "2", "--micro-batch-size", "1",
              "--num-generations", "4", "--num-iterations", "1", "--max-completion-length", "12",
              "--max-prompt-length", "160", "--no-bf16", "--log-completions", "8", "--no-progress"]
    for spec, expect in (("mine.py:score", lambda c, rec: len(c) % 3),
                         ("mine:trl_style", lambda c, rec: rec["reward/format"] + len(c) % 2)):
        run = tmp_path / spec.replace(":", "-")
        assert main(common + ["--reward-fn", spec, "--output", str(run)]) == 0
        assert json.loads((run / "config.json").read_text())["reward_fn"] == spec
        recs = [json.loads(x) for x in (run / "completions.jsonl").read_text().splitlines()]
        assert len(recs) == 8
        by_prompt = {}
        for rec in recs:
            assert rec["reward/total"] == expect(rec["completion"], rec), spec
            by_prompt.setdefault(rec["example"], []).append(rec)
        for group in by_prompt.values():  # all G=4 samples of each of the 2 prompts are logged
            t = torch.tensor([r["reward/total"] for r in group])
            want = (t - t.mean()) / (t.std() + 1e-4) if t.std() > 0 else torch.zeros_like(t)
            assert torch.allclose(torch.tensor([r["advantage"] for r in group]), want, atol=1e-4), spec
        if spec.endswith("trl_style"):  # gta's own rule still measures format and accuracy
            labels = json.loads((run / "labels.json").read_text())
            assert all(rec["reward/format"] == gta_reward(rec["completion"], rec["gold"], "gta", labels,
                                                          rec["truncated"])["format"] for rec in recs)
    capsys.readouterr()
    for spec, says in (("mine", "write module:function"), ("nosuch:f", "importing nosuch failed"),
                       ("mine:absent", "has no function 'absent'"), ("gone.py:f", "no such file gone.py")):
        assert main(common + ["--reward-fn", spec, "--output", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err


def test_the_package_exports_trainer_and_train():
    import gta
    from gta.trainer import train

    assert (gta.Trainer, gta.train, gta.TrainConfig) == (Trainer, train, TrainConfig)
    with pytest.raises(AttributeError):
        gta.NoSuchThing


def test_without_a_validation_split_evaluation_holds_out_training_examples_not_the_test_split(tmp_path, tiny_path,
                                                                                              toy_data, capsys):
    import shutil

    from gta.cli import main

    data = tmp_path / "noval"
    data.mkdir()
    for split in ("train", "test"):
        shutil.copy(toy_data / f"{split}.jsonl", data / f"{split}.jsonl")
    base = dict(model=tiny_path, dataset="noval", data_dir=str(data), max_steps=1, batch_size=2, micro_batch_size=1,
                num_generations=2, num_iterations=1, max_completion_length=8, max_prompt_length=160, bf16=False,
                eval_limit=100)
    texts = lambda exs: {ex.text for ex in exs}  # noqa: E731
    t = Trainer(TrainConfig(**base, output=str(tmp_path / "a"), eval_every=1, eval_split_ratio=0.25), progress=False)
    assert "no validation split: 18 of its 72 training examples" in capsys.readouterr().out
    assert len(t.eval_examples) == 18 and len(t.train_examples) == 54
    assert not texts(t.eval_examples) & texts(t.train_examples)
    assert all("about train item" in x for x in texts(t.eval_examples))  # from train, never from test
    assert sorted(ex.label for ex in t.eval_examples) == sorted([lab for lab in set(t.labels)] * 3)  # stratified
    t = Trainer(TrainConfig(**base, output=str(tmp_path / "b")), progress=False)  # no evaluation: nothing held out
    assert len(t.train_examples) == 72 and not t.eval_examples
    t = Trainer(TrainConfig(**base, output=str(tmp_path / "c"), eval_every=1, eval_on_test=True), progress=False)
    assert "evaluating on its test split" in capsys.readouterr().out
    assert all("about test item" in x for x in texts(t.eval_examples)) and len(t.train_examples) == 72
    capsys.readouterr()
    argv = ["train", "--model", tiny_path, "--dataset", "noval", "--data-dir", str(data), "--max-steps", "1",
            "--no-bf16", "--output", str(tmp_path / "d"), "--eval-every", "1", "--eval-split-ratio", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to evaluate" in err and "--eval-on-test" in err
    Trainer(TrainConfig(**base, output=str(tmp_path / "e")), progress=False).train()
    with pytest.raises(ConfigError, match="cannot turn --eval-every on or off"):
        Trainer(TrainConfig(**base, output=str(tmp_path / "e"), eval_every=1), resume=True, progress=False)


def test_label_names_turn_coded_labels_into_words_for_training_eval_and_predict(tmp_path, tiny_path, capsys):
    from gta.cli import main

    data = tmp_path / "coded"
    data.mkdir()
    words = {0: "sad", 1: "happy", 2: "angry"}
    for split, n in (("train", 12), ("validation", 6), ("test", 6)):
        (data / f"{split}.jsonl").write_text("".join(json.dumps({"text": f"i feel {words[i % 3]} item {i}",
                                                                  "label": i % 3}) + "\n" for i in range(n)))
    (tmp_path / "names.json").write_text(json.dumps(["sad", "happy", "angry"]))
    run = tmp_path / "run"
    for spec in ("0=sad, 1=happy,2=angry", str(tmp_path / "names.json")):
        t = Trainer(TrainConfig(model=tiny_path, dataset="coded", data_dir=str(data), label_names=spec, max_steps=1,
                                batch_size=2, micro_batch_size=1, num_generations=2, num_iterations=1,
                                max_completion_length=8, max_prompt_length=160, bf16=False,
                                output=str(run if spec.endswith(".json") else tmp_path / "a")), progress=False)
        assert t.labels == ["sad", "happy", "angry"] and {ex.label for ex in t.train_examples} == set(t.labels)
        assert "sad, happy, angry" in t.prompts[0]
    t.train()
    assert json.loads((run / "labels.json").read_text()) == ["sad", "happy", "angry"]
    assert main(["eval", str(run), "--test-limit", "3"]) == 0  # the run's --label-names, read from its config
    assert main(["eval", "--model", tiny_path, "--dataset", "coded", "--data-dir", str(data), "--label-names",
                 "0=sad,1=happy", "--output", str(tmp_path / "z")]) == 2
    assert "--label-names names no label '2' of the" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="'1:happy' is not CODE=NAME"):
        TrainConfig(model=tiny_path, dataset="coded", data_dir=str(data), label_names="0=sad,1:happy")
        Trainer(TrainConfig(model=tiny_path, dataset="coded", data_dir=str(data), label_names="0=sad,1:happy",
                            bf16=False, output=str(tmp_path / "b")), progress=False)


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_single_files_of_every_format_train_and_evaluate(ext, tmp_path, tiny_path, capsys):
    import csv

    from gta.cli import main

    rows = {split: [{"text": f"i feel {w} about {split} {i}", "label": w}
                    for i, w in enumerate(["good", "bad", "fine"] * n)] for split, n in (("train", 4), ("test", 2))}
    paths = {}
    for split, rs in rows.items():
        path = paths[split] = tmp_path / f"my_{split}.{ext}"
        if ext in ("csv", "tsv"):
            with path.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["text", "label"], delimiter="\t" if ext == "tsv" else ",")
                w.writeheader()
                w.writerows(rs)
        elif ext == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rs))
        elif ext == "json":
            path.write_text(json.dumps(rs))
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(rs), path)
    run = tmp_path / "run"
    assert main(["train", "--method", "sft", "--model", tiny_path, "--train-file", str(paths["train"]),
                 "--test-file", str(paths["test"]), "--max-steps", "1", "--batch-size", "2", "--no-bf16",
                 "--max-prompt-length", "160", "--output", str(run), "--no-progress"]) == 0
    assert json.loads((run / "labels.json").read_text()) == ["good", "bad", "fine"]
    assert main(["eval", str(run)]) == 0  # the run's test file
    assert json.loads((run / "eval" / "metrics.json").read_text())["n"] == 6
    if ext == "csv":  # a file missing the text column, and a missing file, in one line each
        bad = tmp_path / "bad.csv"
        bad.write_text("body,label\nhello,good\n")
        capsys.readouterr()
        assert main(["train", "--model", tiny_path, "--train-file", str(bad), "--output", str(tmp_path / "x")]) == 2
        assert "bad.csv, line 2: missing field 'text'" in capsys.readouterr().err
        assert main(["train", "--model", tiny_path, "--train-file", str(tmp_path / "no.csv"),
                     "--output", str(tmp_path / "y")]) == 2
        assert "no.csv: no such file" in capsys.readouterr().err


def test_a_datasets_folder_with_classlabel_and_its_own_split_names(tmp_path, tiny_path, capsys):
    """The hub path through `datasets`, offline: a DatasetDict saved with save_to_disk."""
    import datasets

    from gta.cli import main

    feature = datasets.Features({"sentence": datasets.Value("string"),
                                 "y": datasets.ClassLabel(names=["negative", "positive"])})
    make = lambda n: datasets.Dataset.from_dict(  # noqa: E731
        {"sentence": [f"it was {'awful' if i % 2 == 0 else 'great'} {i}" for i in range(n)], "y": [i % 2 for i in range(n)]},
        features=feature)
    folder = tmp_path / "saved"
    datasets.DatasetDict({"training": make(8), "dev": make(4), "test": make(4)}).save_to_disk(str(folder))
    cfg = TrainConfig(model=tiny_path, dataset=str(folder), text_column="sentence", label_column="y",
                      train_split="training", validation_split="dev", max_steps=1, batch_size=2, micro_batch_size=1,
                      num_generations=2, num_iterations=1, max_completion_length=8, max_prompt_length=160, bf16=False,
                      eval_every=1, output=str(tmp_path / "run"))
    t = Trainer(cfg, progress=False)
    assert t.labels == ["negative", "positive"] and len(t.train_examples) == 8 and len(t.eval_examples) == 4
    t.train()
    assert main(["eval", str(tmp_path / "run")]) == 0  # the run's dataset, columns and split names
    assert json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["n"] == 4
    capsys.readouterr()
    assert main(["train", "--model", tiny_path, "--dataset", str(folder), "--text-column", "sentence",
                 "--label-column", "y", "--output", str(tmp_path / "x")]) == 2  # no split named train
    assert "has no split 'train' (it has: training, dev, test); set --train-split" in capsys.readouterr().err
    assert main(["train", "--model", tiny_path, "--dataset", "no_such_thing", "--output", str(tmp_path / "y")]) == 2
    assert "unknown dataset 'no_such_thing'" in capsys.readouterr().err
