"""The `gta` command. Each subcommand parses its arguments and calls one library function."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from .checkpoint import CheckpointError
from .config import TOPICS, TRL_ALIASES, ConfigError, TrainConfig, read_config_file
from .data import DataError
from .models import ModelError

USER_ERRORS = (ConfigError, DataError, ModelError, CheckpointError, FileNotFoundError)


def _spellings(name: str) -> list[str]:
    """--kebab-case and --snake_case, as Hugging Face's argument parser accepts."""
    return list(dict.fromkeys(["--" + name.replace("_", "-"), "--" + name]))


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, typed from its annotation, in both spellings and under TRL's name where it
    has one, grouped by topic in --help. (transformers.HfArgumentParser does the spellings and the dataclass too, but
    not the topic groups or the one-line errors of ConfigError; this stays argparse.)"""
    hints = typing.get_type_hints(TrainConfig)
    aliases = {ours: trl for trl, ours in TRL_ALIASES.items()}
    group = parser
    for f in dataclasses.fields(TrainConfig):
        if f.name in TOPICS:
            group = parser.add_argument_group(TOPICS[f.name])
        flags = _spellings(f.name) + (_spellings(aliases[f.name]) if f.name in aliases else [])
        kind = hints[f.name]
        help_ = f"{f.metadata['help']} (default: {f.default})"
        if kind is bool:
            group.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                               help=help_)
            continue
        base = [a for a in typing.get_args(kind) if a is not type(None)]
        group.add_argument(*flags, dest=f.name, type=base[0] if base else kind, default=f.default,
                           choices=f.metadata.get("choices"), help=help_)


def cmd_train(args) -> None:
    from .trainer import train

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    run = train(TrainConfig(**values), resume=args.resume, progress=not args.no_progress)
    print(f"[gta] run saved in {run}")


def cmd_eval(args) -> None:
    import torch

    from .classifier import Classifier
    from .data import check_labels, label_set, load_splits, stratified_subset
    from .evaluate import evaluate_examples, format_report, write_results
    from .models import bf16_supported, load_model, load_tokenizer, pick_device
    from .prompts import METHOD_TEMPLATE

    if args.run_dir:
        clf = Classifier.from_pretrained(args.run_dir, args.device, args.max_new_tokens, checkpoint=args.checkpoint,
                                         engine=args.engine,
                                         vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization)
        vllm = clf.vllm
        run_cfg = TrainConfig.load(Path(args.run_dir) / "config.json")  # what the run read, unless flags say otherwise
        if args.dataset is None and not (args.train_file or args.test_file):
            args.dataset, args.data_dir = run_cfg.dataset, args.data_dir or run_cfg.data_dir
            args.train_file, args.test_file = run_cfg.train_file, run_cfg.test_file
        args.text_column = args.text_column or run_cfg.text_column
        args.label_names = args.label_names or run_cfg.label_names
        args.label_column = args.label_column or run_cfg.label_column
        model, tokenizer, labels, template = clf.model, clf.tokenizer, clf.labels, clf.template
        max_prompt, max_new, bf16 = args.max_prompt_length or clf.max_prompt_length, clf.max_new_tokens, clf.bf16
        instructions, system = clf.instructions, clf.system
        out_dir = Path(args.output or Path(args.run_dir) / "eval")
    elif args.model:
        dev = pick_device(args.device)
        model, tokenizer = load_model(args.model, dev), load_tokenizer(args.model)
        template = args.prompt or METHOD_TEMPLATE[args.method]
        if bf16_supported(dev):  # inference only: bf16 weights decode faster than autocast
            model = model.to(torch.bfloat16)
        labels, max_prompt, max_new, bf16 = None, args.max_prompt_length or 512, args.max_new_tokens or 128, False
        instructions, system = None, None
        vllm = None
        if args.engine == "vllm":  # the base model's own weights: nothing to push
            from .models import resolve
            from .vllm_engine import VLLMEngine

            vllm = VLLMEngine.for_model(model, resolve(args.model), max_prompt + max_new,
                                        args.vllm_gpu_memory_utilization)
        out_dir = None  # named after the dataset, below
    else:
        raise ConfigError("give a RUN_DIR, or --model ID for a zero-shot evaluation of a base model")
    files = {k: v for k, v in (("train", args.train_file), ("test", args.test_file)) if v}
    if args.dataset is None and not files:
        raise ConfigError("--model evaluates a base model: give --dataset (and --data-dir), or --train-file and "
                          "--test-file")
    if files and args.split != "test" and args.split not in files:
        raise ConfigError(f"--split {args.split}: with --train-file / --test-file the splits are {', '.join(files)}")
    args.dataset = args.dataset or Path(files.get("test", files.get("train"))).stem
    out_dir = out_dir or Path(args.output or f"runs/zeroshot-{Path(args.model).name}-{template}-{args.dataset}") / "eval"
    if args.checkpoint and not args.run_dir:
        raise ConfigError("--checkpoint names a checkpoint of a RUN_DIR")
    args.text_column, args.label_column = args.text_column or "text", args.label_column or "label"
    hub = run_cfg.hub if args.run_dir else None
    splits = load_splits(args.dataset, args.data_dir, args.text_column, args.label_column, args.label_names,
                         files=files or None, need_train=labels is None, hub=hub)
    if labels is None:
        labels = label_set(splits["train"])
    if args.split not in splits:
        raise DataError(f"dataset {args.dataset!r} has no {args.split!r} split (has: {', '.join(splits)})")
    check_labels(splits[args.split], labels, args.split)
    examples = stratified_subset(splits[args.split], args.test_limit, args.seed)
    metrics, records = evaluate_examples(model, tokenizer, examples, labels, template, max_new, max_prompt, bf16,
                                         batch_size=args.batch_size, constrain_answer=args.constrain_answer,
                                         instructions=instructions, system=system, vllm=vllm, fast=args.fast)
    metrics.update({"dataset": args.dataset, "split": args.split, "test_limit": args.test_limit, "seed": args.seed,
                    "template": template, "model": args.model, "run_dir": args.run_dir,
                    "max_prompt_length": max_prompt, "max_new_tokens": max_new,
                    **({"checkpoint": args.checkpoint} if args.checkpoint else {})})
    write_results(out_dir, metrics, records)
    print(format_report(metrics))
    print(f"[gta] wrote {out_dir / 'metrics.json'} and {out_dir / 'predictions.jsonl'}")


def read_inputs(path: str, text_column: str) -> list[str]:
    """Texts to classify from a .txt file (one per non-empty line), .csv or .jsonl (the text column)."""
    from .data import DataError, _read_rows, _read_text

    file = Path(path)
    if not file.is_file():
        raise DataError(f"--input {path}: no such file")
    if file.suffix not in (".txt", ".csv", ".jsonl"):
        raise DataError(f"--input {path}: use a .txt (one text per line), .csv or .jsonl file")
    if file.suffix == ".txt":
        return [line for line in _read_text(file).splitlines() if line.strip()]
    texts = []
    for n, row in _read_rows(file):
        text = row.get(text_column)
        if not isinstance(text, str) or not text.strip():
            what = "missing" if text is None else "empty or not text"
            raise DataError(f"{path}, line {n}: field {text_column!r} is {what} (--text-column names it)")
        texts.append(text)
    return texts


def write_predictions(path: str, texts: list[str], results: list, explain: bool) -> None:
    """One row per input text: text, label ('' in csv, null in jsonl where no label), and with --explain the guess,
    think and the raw output. Written to a temporary file, then renamed."""
    import csv
    import json

    file = Path(path)  # its suffix is .jsonl or .csv (cmd_predict checks it before loading the model)
    rows = [{"text": t, **(r if explain else {"label": r})} for t, r in zip(texts, results)]
    tmp = file.with_name(file.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        if file.suffix == ".jsonl":
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    tmp.replace(file)


def cmd_predict(args) -> None:
    from .classifier import Classifier

    texts = list(args.texts)
    empty = [i for i, t in enumerate(texts, 1) if not t.strip()]
    if empty:
        raise ConfigError(f"text {empty[0]} of the command line is empty; give text to classify")
    if args.input:
        texts += read_inputs(args.input, args.text_column)
    if not texts:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise ConfigError("no text to classify: pass texts, --input FILE, or lines on stdin")
    if args.fast and args.constrain_answer:
        raise ConfigError("choose --fast (no reasoning) or --constrain-answer (reasoning, then a constrained answer)")
    if args.output and Path(args.output).suffix not in (".jsonl", ".csv"):
        raise ConfigError(f"--output {args.output}: use a .jsonl or .csv file")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    clf = Classifier.from_pretrained(args.run_dir, args.device, engine=args.engine,
                                     vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization)
    results = clf.predict(texts, explain=args.explain, fast=args.fast, constrain_answer=args.constrain_answer,
                          batch_size=args.batch_size, progress=args.output is not None)
    if args.output:
        write_predictions(args.output, texts, results, args.explain)
        print(f"[gta] wrote {len(texts)} predictions to {args.output}")
        return
    for text, result in zip(texts, results):
        if args.explain:
            print(f"label: {result['label']}\nguess: {result['guess']}\nthink: {result['think']}\n")
        else:
            print(result if result is not None else "<invalid>")


def cmd_export(args) -> None:
    from .export import export

    out = export(args.run_dir, args.out, checkpoint=args.checkpoint, merge_lora=args.merge_lora)
    print(f"[gta] exported to {out}: weights, tokenizer, generation_config.json, gta.json and a model card "
          f"(README.md); load it with gta.Classifier.from_pretrained('{out}')")


def cmd_report(args) -> None:
    from .report import write_report

    pngs, text = write_report(args.run_dir, args.output)
    print(text)
    print(f"[gta] wrote {len(pngs)} plots and summary.txt in {args.output or Path(args.run_dir) / 'report'}")


def _add_engine_flags(p) -> None:
    p.add_argument("--engine", default="native", choices=["native", "vllm"],
                   help="what decodes the outputs: gta's own decoder, or vLLM (pip install 'gta-rl[vllm]')")
    p.add_argument("--vllm-gpu-memory-utilization", type=float, default=0.3,
                   help="with --engine vllm: the share of GPU memory vLLM may take (on a CPU its KV cache is "
                        "sized for 64 sequences instead)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gta", description="GTA: Guess-Think-Answer training for text classification",
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (sft, grpo, gta, gta-rl)", allow_abbrev=False,
                       description="Every setting is a flag (--kebab-case or --snake_case, or TRL's name where it has "
                                   "one) and a key of --config FILE; flags override the file.")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML or JSON file of settings (a run's config.json too); flags given here override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its latest checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)
    parser.train_parser = p  # main() sets its defaults from --config

    p = sub.add_parser("eval", help="evaluate a run (or a base model zero-shot) on a test split", allow_abbrev=False)
    p.add_argument("run_dir", nargs="?", help="a gta train --output folder")
    p.add_argument("--dataset", default=None, help="default: the run's")
    p.add_argument("--data-dir", default=None, help="default: the run's")
    p.add_argument("--text-column", default=None, help="default: the run's, else text")
    p.add_argument("--label-column", default=None, help="default: the run's, else label")
    p.add_argument("--label-names", default=None, help="default: the run's (0=negative,1=positive or a JSON file)")
    p.add_argument("--test-file", default=None, help="a single file of the split to evaluate (default: the run's)")
    p.add_argument("--train-file", default=None, help="with --model and --test-file: the file the labels come from")
    p.add_argument("--checkpoint", default=None, metavar="step-N",
                   help="evaluate this checkpoint of the run instead of its latest")
    p.add_argument("--split", default="test")
    p.add_argument("--test-limit", type=int, default=None, help="seeded stratified subset of the split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default=None, help="evaluate this base model zero-shot instead of a run")
    p.add_argument("--method", default="gta", choices=["sft", "grpo", "gta", "gta-rl"],
                   help="with --model: which method's prompt to use")
    p.add_argument("--prompt", default=None, choices=["direct", "think", "gta"], help="with --model: the prompt")
    p.add_argument("--max-prompt-length", type=int, default=None, help="default: the run's, else 512")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's, else 128")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default=None, help="folder for eval/ results (default RUN_DIR/eval)")
    p.add_argument("--constrain-answer", action="store_true",
                   help="also score the answer constrained to the label set, after the reasoning as generated")
    p.add_argument("--no-fast", dest="fast", action="store_false",
                   help="skip the `fast` block of a GTA run (the guess constrained to the labels: a second pass over "
                        "every prompt)")
    _add_engine_flags(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify texts with a trained run", allow_abbrev=False)
    p.add_argument("run_dir")
    p.add_argument("texts", nargs="*", help="texts to classify (else --input, else stdin, one per line)")
    p.add_argument("--input", "--file", dest="input", default=None, metavar="FILE",
                   help="texts to classify: .txt (one per line), .csv or .jsonl (--text-column)")
    p.add_argument("--text-column", default="text", help="the text column of a .csv or .jsonl --input")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="write one row per text to this .jsonl or .csv file instead of printing")
    p.add_argument("--batch-size", type=int, default=8, help="texts decoded together")
    p.add_argument("--explain", action="store_true", help="also print the guess and the reasoning")
    p.add_argument("--fast", action="store_true",
                   help="stop after the guess (label constrained to the label set): no reasoning, much faster")
    p.add_argument("--constrain-answer", action="store_true",
                   help="reason as usual, then constrain the answer to the label set")
    p.add_argument("--device", default="auto")
    _add_engine_flags(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a run as a clean Hugging Face folder with a model card",
                       allow_abbrev=False)
    p.add_argument("run_dir")
    p.add_argument("out", help="a new (or empty) folder")
    p.add_argument("--checkpoint", default=None, metavar="step-N", help="this checkpoint instead of the latest")
    p.add_argument("--merge-lora", action="store_true", help="merge a LoRA adapter into its base (full weights)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("report", help="plot a run's metrics (PNG files) and print a short summary", allow_abbrev=False)
    p.add_argument("run_dir")
    p.add_argument("--output", default=None, help="folder for the plots (default RUN_DIR/report)")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # --config FILE: its settings become the defaults that the flags override
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config", default=None)
        config = pre.parse_known_args(argv[1:])[0].config
        if config is not None:
            try:
                parser.train_parser.set_defaults(**read_config_file(config))
            except ConfigError as e:
                print(f"gta: error: {e}", file=sys.stderr)
                return 2
    args, extra = parser.parse_known_args(argv)
    if extra:  # `gta predict RUN --fast "text"`: texts after a flag
        if args.command != "predict" or any(x.startswith("-") for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.texts = list(args.texts) + extra
    try:
        args.func(args)
    except USER_ERRORS as e:
        print(f"gta: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
