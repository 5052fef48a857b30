"""Run by tests/test_distributed.py under torchrun: one gta step on 2 processes where process 0's rollouts all stop at
their first token and process 1's are longer. Not a test module (no test_ prefix)."""
import os
import sys

import torch

from gta import rollout
from gta.config import TrainConfig
from gta.trainer import Trainer


def main(model: str, data_dir: str, output: str) -> None:
    rank = int(os.environ["RANK"])

    def scripted(sampler, batch, G, max_new, stops, pad, *args, **kw):
        from gta.models import load_tokenizer

        tok = load_tokenizer(model)
        text = "joy</guess><think>a b c</think><answer>joy</answer>"
        row = [tok.eos_token_id] if rank == 0 else tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        n = batch.input_ids.shape[0] * G
        ids = torch.tensor([row] * n)
        return ids, torch.ones_like(ids), torch.zeros(ids.shape)

    rollout.generate = scripted
    cfg = TrainConfig(method="gta", model=model, dataset="emotion", data_dir=data_dir, train_limit=8, max_steps=1,
                      batch_size=2, micro_batch_size=1, num_generations=2, num_iterations=2, max_completion_length=32,
                      max_prompt_length=128, bf16=False, device="cpu", output=output, eval_every=0)
    Trainer(cfg, progress=False).train()


if __name__ == "__main__":
    main(*sys.argv[1:4])
