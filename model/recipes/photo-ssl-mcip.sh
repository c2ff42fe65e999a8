#!/usr/bin/env bash
# The paper's experiment on the SSL research base, from the data alone, in one re-runnable command:
#   CLIP_INGEST_DATA=../shared/data bash model/recipes/photo-ssl-mcip.sh   (from the repository root)
# 1. the manifests of photo-base-s.toml (Flickr8k-train, Caltech-101 train, Open Clip Art at 128 px);
# 2. the base: photo-base-ssl.toml (20 epochs, ~74-160 min on 2 CPU cores);
# 3. the labelled images (ETH-80 objects 1-6 + Caltech-101 train) and their pseudo-captions mined
#    from the Flickr8k-train pool by the base; realignment data = Flickr8k-train + those;
# 4. clip-model experiment --recipe photo-ssl-mcip: 4 rows x 3 seeds, then one evaluation with
#    random init and base beside them, written to runs/photo-ssl-mcip/v4/experiment.{md,json};
# 5. the MCIP + realignment model of seed 0 exported to runs/photo-ssl-mcip/export, its
#    MODEL_CARD.md showing that table.
# Outputs go to runs/ under the current folder (the recipes' out_root): run it from a folder that
# outlives the checkout, and give the checkout's docs/results/photo-ssl-mcip.md the table with
#   clip-model update-doc docs/results/photo-ssl-mcip.md photo-ssl-mcip-v4 runs/photo-ssl-mcip/v4/experiment.md
# Every step is safe to interrupt and re-run: clip-model writes a manifest whole or not at all
# (so one that exists is kept), training resumes after its last finished epoch, the experiment
# skips finished stages.
# RESEARCH USE: Flickr8k and ETH-80 data; never ship the weights.
# CLIP_MODEL names the clip-model command (default: clip-model, e.g. from the activated venv).
set -euo pipefail
: "${CLIP_INGEST_DATA:?set CLIP_INGEST_DATA to the folder holding eth80/, caltech101/, flickr8k_train/ ...}"
export CLIP_INGEST_DATA HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
read -r -a CLIP_MODEL <<< "${CLIP_MODEL:-clip-model}"
BASE=runs/photo-base-s  # manifests shared with photo-base-s / photo-base-ssl
EXP=runs/photo-ssl-mcip  # photo-ssl-mcip.toml's out_root
mkdir -p "$BASE" "$EXP"

have() { [ -s "$1" ]; }
concat() {  # concat OUT IN...: OUT = the INs in order, whole or not at all
  local out=$1; shift
  cat "$@" > "$out.tmp" && mv "$out.tmp" "$out"
}

have "$BASE/flickr8k_train.jsonl" || "${CLIP_MODEL[@]}" manifest flickr8k_train -o "$BASE/flickr8k_train.jsonl"
have "$BASE/caltech101.jsonl" || "${CLIP_MODEL[@]}" manifest caltech101 -o "$BASE/caltech101.jsonl"
have "$BASE/openclipart.jsonl" || "${CLIP_MODEL[@]}" manifest openclipart -o "$BASE/openclipart.jsonl" \
  --max-side 128 --image-dir "$BASE/openclipart-128"
have "$BASE/train.jsonl" || concat "$BASE/train.jsonl" "$BASE"/{flickr8k_train,caltech101,openclipart}.jsonl

"${CLIP_MODEL[@]}" -v pretrain --recipe photo-base-ssl

have "$EXP/eth80-train.jsonl" || "${CLIP_MODEL[@]}" manifest eth80 --objects 1-6 -o "$EXP/eth80-train.jsonl"
have "$EXP/labelled.jsonl" || concat "$EXP/labelled.jsonl" "$EXP/eth80-train.jsonl" "$BASE/caltech101.jsonl"
have "$EXP/finetune.jsonl" || "${CLIP_MODEL[@]}" mine-captions --recipe photo-ssl-mcip
have "$EXP/realign.jsonl" || concat "$EXP/realign.jsonl" "$BASE/flickr8k_train.jsonl" "$EXP/finetune.jsonl"

"${CLIP_MODEL[@]}" -v experiment --recipe photo-ssl-mcip
"${CLIP_MODEL[@]}" export --recipe photo-ssl-mcip --overwrite
