"""One typed config per run. Every field is a `gta train` flag and is saved with the run."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

METHODS = ("sft", "grpo", "gta", "gta-rl")


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message says what to change."""


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # what to train
    method: str = _f("gta", "sft | grpo | gta | gta-rl", choices=METHODS)
    model: str = _f("smollm2-135m", "built-in name, local HF folder or hub id")
    dataset: str = _f("bbc_news", "sst5 | emotion | massive_scenario | bbc_news, a hub id (org/name, online; "
                                    "--dataset-config), a folder saved with datasets' save_to_disk, or any name with "
                                    "--data-dir")
    data_dir: str | None = _f(None, "folder of {train,validation,test}.jsonl|csv|parquet")
    dataset_config: str | None = _f(None, "configuration of a hub dataset (datasets.load_dataset's name)")
    train_split: str = _f("train", "a hub or saved dataset's name for its train split")
    validation_split: str = _f("validation", "its name for the validation split")
    test_split: str = _f("test", "its name for the test split")
    train_file: str | None = _f(None, "a single file of the train split (csv, tsv, jsonl, json, parquet) instead "
                                      "of --dataset / --data-dir")
    validation_file: str | None = _f(None, "a single file of the validation split")
    test_file: str | None = _f(None, "a single file of the test split")
    text_column: str = _f("text", "name of the text column")
    label_column: str = _f("label", "name of the label column")
    label_names: str | None = _f(None, "names for coded labels: \"0=negative,1=positive\" or a JSON file "
                                       "({\"0\": \"negative\"} or a list by position); the names are what the model "
                                       "is taught and predict returns")
    train_limit: int | None = _f(None, "seeded stratified subset of the train split")
    instructions: str | None = _f(None, "the task sentence of every method's prompt, e.g. \"Classify the sentiment "
                                        "of the movie review.\" (the label list follows it; default: classify the "
                                        "text into the labels); kept with the run for eval and predict")
    system_prompt: str | None = _f(None, "the system message of the prompt (default: \"You are a careful text "
                                         "classifier.\"); kept with the run")
    output: str = _f("runs/gta", "run folder (config, labels, metrics.jsonl, checkpoints)")
    seed: int = _f(0, "seed for data order, sampling and initialisation")
    data_seed: int | None = _f(None, "seed of the train and held-out subsets (default: --seed); a second --seed "
                                     "with the same --data-seed measures run-to-run spread on the same examples")
    # model and precision
    lora_r: int = _f(0, "LoRA rank; 0 = full fine-tuning")
    lora_alpha: int = _f(32, "LoRA alpha")
    lora_dropout: float = _f(0.0, "dropout on the LoRA adapters' input (sft only: RL methods run without dropout)")
    lora_target_modules: str = _f("all-linear", "modules that get adapters: all-linear, or a comma list such as "
                                                "q_proj,k_proj,v_proj,o_proj")
    bf16: bool = _f(True, "bf16 autocast (CPU with avx512_bf16, or CUDA)")
    dtype: str = _f("auto", "precision the frozen base weights of a LoRA run are held in: auto = bfloat16 with bf16 "
                            "autocast, else float32 (full fine-tuning always keeps float32 master weights)",
                    choices=("auto", "float32", "bfloat16"))
    gradient_checkpointing: bool = _f(False, "recompute each decoder layer's activations in the backward instead of "
                                             "keeping them (about a third more compute for much less memory)")
    attn_implementation: str = _f("sdpa", "attention kernel of the model: sdpa | eager | flash_attention_2 (CUDA, "
                                          "needs the flash-attn package)",
                                  choices=("sdpa", "eager", "flash_attention_2"))
    device: str = _f("auto", "auto | cpu | cuda")
    trust_remote_code: bool = _f(False, "allow model code from the hub")
    # batching and optimisation
    batch_size: int = _f(4, "prompts per optimizer step over all processes; completions per step = batch x G "
                            "(TRL's per-device batch counts completions)")
    micro_batch_size: int = _f(2, "prompts per forward/backward; gradients are accumulated over a step")
    sync_each_micro_batch: bool = _f(True, "several processes: reduce-scatter the gradient after every micro-batch "
                                           "(each process holds only its shard); --no-sync-each-micro-batch reduces "
                                           "once per backward pass, holding a whole gradient per process until then "
                                           "(accelerate's sync_each_batch)")
    max_steps: int | None = _f(None, "stop after this many steps (default: --epochs passes over the data)")
    epochs: float = _f(1.0, "passes over the train subset when --max-steps is not given (paper: 3-4)")
    learning_rate: float = _f(1e-5, "AdamW learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_ratio: float = _f(0.0, "linear warm-up as a fraction of the optimizer updates")
    lr_scheduler_type: str = _f("linear", "learning-rate schedule after the warm-up (transformers.get_scheduler): "
                                          "linear decay to 0 | cosine | constant_with_warmup",
                                choices=("linear", "cosine", "constant_with_warmup"))
    max_grad_norm: float = _f(1.0, "gradient clipping norm; 0 disables")
    # GRPO (paper eq. 5), used by grpo, gta, gta-rl
    num_generations: int = _f(16, "G: samples per prompt")
    num_iterations: int = _f(4, "mu: optimizer updates per batch of rollouts (importance-sampling reuse)")
    epsilon: float = _f(0.2, "epsilon: clip range of the ratio")
    beta: float = _f(0.01, "beta: weight of the k3 KL to the reference model")
    ref_sync_steps: int = _f(16, "refresh the reference from the policy every this many steps (0 = never)")
    temperature: float = _f(1.0, "sampling temperature of rollouts")
    max_completion_length: int = _f(128, "max new tokens per rollout / evaluation")
    max_prompt_length: int = _f(512, "prompts are cut to this many tokens by truncating the text")
    rollout_engine: str = _f("native", "what samples the rollouts: native (gta's shared-prefix decoder; the CPU "
                                       "choice) | vllm (a colocated vLLM engine, weights pushed before each rollout; "
                                       "pip install 'gta-rl[vllm]', docs/gpu.md)", choices=("native", "vllm"))
    vllm_gpu_memory_utilization: float = _f(0.3, "share of the GPU's memory vLLM may take for its weights and KV cache "
                                                 "(on a CPU its KV cache is sized for one step's completions instead)")
    vllm_max_model_len: int | None = _f(None, "vLLM's longest sequence (default: --max-prompt-length + "
                                              "--max-completion-length)")
    vllm_importance_sampling_cap: float | None = _f(None, "correct the rollout engine's mismatch: weight each token's "
                                                          "policy-gradient term by min(pi_old / pi_vllm, C) (TRL's "
                                                          "truncated importance sampling); default off")
    vllm_enable_sleep_mode: bool = _f(True, "CUDA: free vLLM's weights and KV cache during the update and bring "
                                            "them back for the next rollout")
    # GTA (paper eqs. 9-11)
    lambda1: float = _f(1.0, "lambda1: weight of the guess SFT loss")
    lambda2: float = _f(1.0, "lambda2: weight of the RL loss")
    conflict: str = _f("drop", "drop (paper eq. 11) | project (PCGrad) | none", choices=("drop", "project", "none"))
    sft_reduction: str = _f("mean", "the SFT loss (gta's guess, the sft baseline's label): mean = summed target-token "
                                    "NLL / the step's target tokens (HF cross-entropy, -100 masking: the paper's); "
                                    "sum = summed over each example's tokens, averaged over examples",
                            choices=("mean", "sum"))
    reward_fn: str | None = _f(None, "your own reward, module:function or file.py:function: gta's signature "
                                     "(docs/extending.md), or TRL's f(prompts, completions, **columns) -> "
                                     "list[float], added to the format reward (default: format + accuracy)")
    # logging, evaluation, checkpoints
    eval_every: int = _f(0, "evaluate on a validation subset every N steps (0 = never)")
    eval_limit: int = _f(64, "size of that validation subset")
    eval_split_ratio: float = _f(0.05, "without a validation split: the share of the train split held out (seeded, "
                                       "stratified, never trained on) for --eval-every")
    eval_on_test: bool = _f(False, "without a validation split: evaluate on the test split during training instead "
                                   "(its later test score is then not a clean one)")
    save_every: int = _f(50, "checkpoint every N steps (and always at the end)")
    keep_checkpoints: int = _f(2, "how many checkpoints to keep (the --save-best one is kept beside them)")
    save_best: str | None = _f(None, "also keep the checkpoint of the best evaluation by this metric "
                                     "(checkpoints/best.json names it; needs --eval-every)",
                               choices=("eval/accuracy", "eval/f1"))
    log_every: int = _f(1, "write metrics every N steps")
    report_to: str = _f("auto", "where metrics go besides metrics.jsonl: a comma list of tensorboard, wandb, mlflow, "
                                "trackio, or none (auto: tensorboard when it is installed)")
    run_name: str | None = _f(None, "the run's name in those backends (default: the run folder's name)")
    log_completions: int = _f(4, "write this many of each step's sampled completions (spread over its prompts) to "
                                 "completions.jsonl: spans, rewards, advantage (0 = none; process 0's rollouts)")

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.conflict not in ("drop", "project", "none"):
            raise ConfigError(f"unknown --conflict {self.conflict!r}; choose drop, project or none")
        for name in ("batch_size", "micro_batch_size", "num_generations", "num_iterations", "max_completion_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        checks = [  # (field, value is valid, what it must be); `not x > 0` also catches NaN
            ("learning_rate", self.learning_rate > 0, "> 0"), ("epochs", self.epochs > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"), ("max_grad_norm", self.max_grad_norm >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"), ("epsilon", self.epsilon >= 0, ">= 0"),
            ("beta", self.beta >= 0, ">= 0"), ("lambda1", self.lambda1 >= 0, ">= 0"),
            ("lambda2", self.lambda2 >= 0, ">= 0"), ("lora_r", self.lora_r >= 0, ">= 0"),
            ("ref_sync_steps", self.ref_sync_steps >= 0, ">= 0"), ("eval_every", self.eval_every >= 0, ">= 0"),
            ("eval_limit", self.eval_limit >= 1, ">= 1"),
            ("eval_split_ratio", 0 <= self.eval_split_ratio < 1, "in [0, 1)"), ("save_every", self.save_every >= 1, ">= 1"),
            ("keep_checkpoints", self.keep_checkpoints >= 0, ">= 0"), ("log_every", self.log_every >= 1, ">= 1"),
            ("log_completions", self.log_completions >= 0, ">= 0"),
            ("max_prompt_length", self.max_prompt_length >= 1, ">= 1"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, ">= 1"),
            ("train_limit", self.train_limit is None or self.train_limit >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")
        if self.lr_scheduler_type not in ("linear", "cosine", "constant_with_warmup"):
            raise ConfigError(f"unknown --lr-scheduler-type {self.lr_scheduler_type!r}; choose linear, cosine or "
                              "constant_with_warmup")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"unknown --dtype {self.dtype!r}; choose auto, float32 or bfloat16")
        if self.dtype == "bfloat16" and self.lora_r == 0:
            raise ConfigError("--dtype bfloat16 sets the frozen base of a LoRA run (--lora-r > 0); full fine-tuning "
                              "keeps float32 master weights (bf16 compute comes from --bf16)")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ConfigError(f"unknown --attn-implementation {self.attn_implementation!r}; choose sdpa, eager or "
                              "flash_attention_2")
        if self.sft_reduction not in ("mean", "sum"):
            raise ConfigError(f"unknown --sft-reduction {self.sft_reduction!r}; choose mean or sum")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be > 0 (rollouts sample from softmax(z / T)), got {self.temperature}")
        if self.method != "sft" and self.num_generations < 2:
            raise ConfigError("--num-generations must be >= 2: GRPO normalises rewards within a group")
        if self.rollout_engine not in ("native", "vllm"):
            raise ConfigError(f"unknown --rollout-engine {self.rollout_engine!r}; choose native or vllm")
        if self.rollout_engine != "vllm" and self.vllm_importance_sampling_cap is not None:
            raise ConfigError("--vllm-importance-sampling-cap corrects vLLM's rollouts: it needs --rollout-engine vllm")
        if self.vllm_importance_sampling_cap is not None and not self.vllm_importance_sampling_cap > 0:
            raise ConfigError(f"--vllm-importance-sampling-cap must be > 0, got {self.vllm_importance_sampling_cap}")
        if not 0 < self.vllm_gpu_memory_utilization <= 1:
            raise ConfigError(f"--vllm-gpu-memory-utilization must be in (0, 1], got {self.vllm_gpu_memory_utilization}")
        if self.vllm_max_model_len is not None and self.vllm_max_model_len < 2:
            raise ConfigError(f"--vllm-max-model-len must be >= 2, got {self.vllm_max_model_len}")
        if self.save_best not in (None, "eval/accuracy", "eval/f1"):
            raise ConfigError(f"unknown --save-best {self.save_best!r}; choose eval/accuracy or eval/f1")
        if self.save_best and not self.eval_every:
            raise ConfigError("--save-best needs --eval-every N: it keeps the checkpoint of the best evaluation")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"--batch-size {self.batch_size} must be a multiple of --micro-batch-size "
                              f"{self.micro_batch_size}")

    @property
    def files(self) -> dict[str, str]:
        """{split: path} of the single files given (--train-file, ...)."""
        return {split: f for split, f in (("train", self.train_file), ("validation", self.validation_file),
                                          ("test", self.test_file)) if f}

    @property
    def hub(self) -> dict:
        """How a `datasets` dataset is read: its configuration and split names."""
        return {"config": self.dataset_config, "split_names": {"train": self.train_split,
                                                               "validation": self.validation_split,
                                                               "test": self.test_split}}

    @property
    def uses_rl(self) -> bool:
        return self.method != "sft"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in REMOVED}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown config key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()), source=str(path))


# The first field of each topic of `gta train --help` (fields keep their order in TrainConfig)
TOPICS = {"method": "what to train", "lora_r": "model and precision", "batch_size": "batching and optimisation",
          "num_generations": "GRPO (grpo, gta, gta-rl)", "rollout_engine": "rollouts on vLLM", "lambda1": "GTA (gta)",
          "eval_every": "logging, evaluation, checkpoints"}
# TRL's names for the same settings (TrainingArguments / GRPOConfig / ScriptArguments / ModelConfig), accepted as flags
# and config keys. TRL's per_device_train_batch_size is not among them: it counts completions per device, gta's
# --batch-size prompts over all processes.
TRL_ALIASES = {"output_dir": "output", "num_train_epochs": "epochs", "save_steps": "save_every",
               "logging_steps": "log_every", "eval_steps": "eval_every", "save_total_limit": "keep_checkpoints",
               "model_name_or_path": "model", "dataset_name": "dataset"}


def read_config_file(path: str | Path) -> dict:
    """A YAML or JSON file of TrainConfig settings (a run's own config.json included) as a dict of field values.
    Keys may be written in snake_case or kebab-case, or by TRL's name (TRL_ALIASES); string values of numeric or
    boolean fields are converted (YAML reads `1e-5` as a string). Errors name the file and the key or line."""
    import typing

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    else:
        import yaml  # a dependency of transformers

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value), got {type(raw).__name__}")
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        name = TRL_ALIASES.get(name, name)
        if name in REMOVED:
            continue
        if name not in known:
            raise ConfigError(f"{path}: unknown config key {key!r}; known keys: {sorted(known)}")
        out[name] = _coerce(value, hints[name], f"{path}: {key}")
    return out


def _coerce(value, kind, where: str):
    """A config file's value as the field's type: strings of numbers and booleans are converted."""
    import typing

    base = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
    if value is None or not isinstance(value, str) or base[0] is str:
        return value
    try:
        if base[0] is bool:
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "yes", "1")
        return base[0](value) if base[0] is float else int(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a valid {base[0].__name__}") from None


# Settings of earlier versions that no longer exist and changed nothing a run computed: ignored in a run's config.json
# (FSDP2 now shards weights, gradients and optimizer states whenever there are several processes).
REMOVED = {"shard_optimizer", "shard_gradients"}


def write_json_atomic(path: Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
