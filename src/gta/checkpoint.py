"""Checkpoints: weights (or adapter) as safetensors that transformers/peft load directly, the optimizer's states and
the reference snapshot in torch.distributed.checkpoint's format (`train_state/`: each process writes its own shards,
and a run resumes on any number of processes), scheduler, RNG state, step and config. Each checkpoint is written to
a temporary folder and renamed into place, so a killed run never leaves a half-written one; `latest` is updated
last, also atomically. With several processes the folder must be on storage every process sees."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from .config import write_json_atomic


class CheckpointError(ValueError):
    pass


def is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def save(run_dir: Path, step: int, engine, model, tokenizer, optimizer, scheduler, reference: dict | None,
         config: dict, keep: int) -> Path:
    """Called by every process (the gathers and the sharded write are collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    ckdir = Path(run_dir) / "checkpoints"
    final = ckdir / f"step-{step:06d}"
    tmp = ckdir / f".step-{step:06d}.tmp"
    if engine.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    engine.barrier()
    # the whole weights on process 0, for the Hugging Face folder (one process: save_pretrained reads the model)
    weights = None
    if engine.sharded:
        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        weights = {k: v for k, v in weights.items() if k not in _tied(model)}  # as save_pretrained writes them
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    if reference is not None:
        state["reference"] = reference
    with _one_process_ok():
        dcp.save(state, checkpoint_id=tmp / "train_state")
    if engine.is_main:
        model.save_pretrained(tmp, state_dict=weights, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save({"torch": torch.get_rng_state()}, tmp / "rng.pt")
        version, internal, gauss = random.getstate()
        write_json_atomic(tmp / "trainer_state.json", {"step": step, "config": config, "processes": engine.world,
                                                       "python_rng": [version, list(internal), gauss]})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_json_atomic(ckdir / "latest.json", {"step": step, "path": final.name})
        prune(ckdir, keep)
    engine.barrier()
    return final


def prune(ckdir: Path, keep: int) -> None:
    """Delete all but the last `keep` checkpoints (0 = keep all) and the one best.json names."""
    best = read_best(ckdir.parent)
    for old in sorted(ckdir.glob("step-*"))[:-keep] if keep > 0 else []:
        if best is None or old.name != best["path"]:
            shutil.rmtree(old, ignore_errors=True)


def read_best(run_dir: Path) -> dict | None:
    """checkpoints/best.json: {"step", "path", "metric", "value"} of the best evaluation so far (--save-best)."""
    pointer = Path(run_dir) / "checkpoints" / "best.json"
    if not pointer.is_file():
        return None
    try:
        return json.loads(pointer.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{pointer} is corrupt ({e}); delete it to start the --save-best record again") from None


def mark_best(run_dir: Path, checkpoint: Path, step: int, metric: str, value: float, keep: int) -> None:
    """Record `checkpoint` as the best one (process 0, after it is written), then prune the previous best."""
    write_json_atomic(Path(run_dir) / "checkpoints" / "best.json",
                      {"step": step, "path": checkpoint.name, "metric": metric, "value": value})
    prune(Path(run_dir) / "checkpoints", keep)


@contextlib.contextmanager
def _one_process_ok():
    """torch.distributed.checkpoint warns that it assumes one process when no process group exists: that is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _tied(model) -> set[str]:
    """Names of parameters that are another parameter (tied weights, e.g. lm_head = embed_tokens), after the first."""
    seen, tied = set(), set()
    for name, p in model.named_parameters(remove_duplicate=False):
        (tied.add(name) if id(p) in seen else seen.add(id(p)))
    return tied


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


def named(run_dir: Path, name: str) -> Path:
    """The checkpoint folder `step-N` (or `step-00000N`, as written) of a run."""
    ckdir = Path(run_dir) / "checkpoints"
    try:
        path = ckdir / f"step-{int(name.removeprefix('step-')):06d}"
    except ValueError:
        path = None
    if path is None or not path.is_dir():
        have = ", ".join(p.name for p in sorted(ckdir.glob("step-*"))) or "none"
        raise CheckpointError(f"{ckdir} has no checkpoint {name!r} (it has: {have})")
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
    tied = _tied(model)  # not in the file: save_pretrained writes a tied weight once
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


def load_training_state(path: Path, model, optimizer, scheduler, reference: dict | None) -> int:
    """Restore optimizer (re-sharded to this run's processes), the reference snapshot (in place, into `reference`'s
    tensors), scheduler and RNG; return the step. Called by every process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    try:
        state = json.loads((path / "trainer_state.json").read_text())
        if (path / "train_state").is_dir():
            target = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # the shapes (and shards) to fill
            if reference is not None:
                target["reference"] = reference
            with _one_process_ok():
                dcp.load(target, checkpoint_id=path / "train_state")
            set_optimizer_state_dict(model, optimizer, target["optimizer"])
        else:  # a one-process checkpoint written before torch.distributed.checkpoint was used
            optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
            if reference is not None:
                for k, v in _load(path / "reference.safetensors").items():
                    reference[k].copy_(v)
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = torch.load(path / "rng.pt", weights_only=True)
    # torch.load raises several unrelated types (UnpicklingError, RuntimeError, EOFError); torch.distributed.checkpoint
    # its CheckpointException, a BaseException
    except (Exception, CheckpointException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({first}); delete it to resume "
                              "from the previous one") from None
    torch.set_rng_state(rng["torch"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return state["step"]
