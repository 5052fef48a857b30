"""Checkpoints: weights (or adapter) as safetensors that transformers/peft load directly, optimizer,
scheduler, RNG states, step and config. Each is written to a temporary folder and renamed into place,
so a killed run never leaves a half-written checkpoint; `latest` is updated last, also atomically."""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .config import write_json_atomic


class CheckpointError(ValueError):
    pass


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def save(run_dir: Path, step: int, model, tokenizer, optimizer, scheduler, reference: dict | None,
         config: dict, keep: int) -> Path:
    ckdir = Path(run_dir) / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
    if reference is not None:
        save_file({k: v.contiguous() for k, v in reference.items()}, tmp / "reference.safetensors")
    version, internal, gauss = random.getstate()
    write_json_atomic(tmp / "trainer_state.json", {"step": step, "config": config,
                                                   "python_rng": [version, list(internal), gauss]})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json_atomic(ckdir / "latest.json", {"step": step, "path": final.name})
    for old in sorted(ckdir.glob("step-*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(run_dir: Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    try:
        path = pointer.parent / json.loads(pointer.read_text())["path"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"{pointer} is corrupt ({e}); delete it to resume from scratch") from None
    if not path.is_dir():
        raise CheckpointError(f"{pointer} points to {path}, which does not exist")
    return path


def load_weights(model, path: Path) -> None:
    """Load a checkpoint's weights (full model or LoRA adapter) into an already-built model."""
    if is_peft(model):
        from peft import set_peft_model_state_dict

        file = path / "adapter_model.safetensors"
        state = _load(file)
        result = set_peft_model_state_dict(model, state)
        if result.unexpected_keys:
            raise CheckpointError(f"{file}: unexpected keys {result.unexpected_keys[:5]}")
        return
    file = path / "model.safetensors"
    state = _load(file)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise CheckpointError(f"{file}: does not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    if tied:
        model.tie_weights()


def verify(path: Path) -> None:
    """Check that a checkpoint's safetensors files are readable (their headers only: cheap)."""
    from safetensors import safe_open

    files = sorted(Path(path).glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path} holds no .safetensors weights; the checkpoint is incomplete")
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                f.keys()
        except Exception as e:
            raise CheckpointError(f"{file} is unreadable or corrupt ({e})") from None


def _load(file: Path) -> dict:
    if not file.is_file():
        raise CheckpointError(f"{file} is missing; the checkpoint is incomplete")
    try:
        return load_file(file)
    except Exception as e:
        raise CheckpointError(f"{file} is unreadable or corrupt ({e})") from None


def load_training_state(path: Path, optimizer, scheduler) -> tuple[int, dict | None]:
    """Restore optimizer, scheduler and RNG; return (step, reference snapshot or None)."""
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = torch.load(path / "rng.pt", weights_only=True)
    except Exception as e:  # torch.load raises several unrelated types (UnpicklingError, RuntimeError, EOFError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({first}); delete it to resume "
                              "from the previous one") from None
    torch.set_rng_state(rng["torch"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    ref_file = path / "reference.safetensors"
    return state["step"], (_load(ref_file) if ref_file.is_file() else None)
