#!/usr/bin/env bash
# Every run docs/results.md reports, one after the other (issue 43's order: the cheapest verdicts first), then the
# TF-IDF baseline and the page. paper.py skips finished runs and resumes an interrupted one from its checkpoints, so
# after any interruption run this again. About 14 hours on a 2-core CPU; let nothing else share the CPU if the
# minutes are to be a budget (or record what did: python benchmarks/paper.py --dataset NAME --timing-note "...").
#
#     bash benchmarks/paper_all.sh            # or: nice -n 10 bash benchmarks/paper_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
paper() { python benchmarks/paper.py "$@"; }
paper --dataset sst5                                   # Table 2 and Table 3 (GTA(RL)) analogues
paper --dataset emotion --ablation                     # + GTA with --conflict project / none
paper --dataset emotion --seed 1 --methods sft gta     # the seed spread of GTA vs SFT
paper --dataset sst5 --seed 1 --methods sft gta
paper --dataset massive_scenario --ablation
paper --dataset massive_scenario --seed 1 --methods sft gta
paper --dataset bbc_news
paper --dataset bbc_news --seed 1 --methods sft gta
python benchmarks/tfidf.py
python benchmarks/report.py
