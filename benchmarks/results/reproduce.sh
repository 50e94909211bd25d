#!/usr/bin/env bash
# The commands behind benchmarks/results/ and the shipped default bundle, in order.
# Run from the repository root with FER2013 at ../shared/data (2-core CPU: several hours).
set -euo pipefail
D=../shared/data/fer2013
V=../shared/data/video/neutral_to_angry.avi

# 1. train (background these; each writes runs/<name>/{best,last}.pt, metrics.json, train.log)
fer-train --data $D --arch fercnn_m --epochs 60 --batch-size 64 --lr 0.05 --optimizer sgd \
    --schedule cosine --label-smoothing 0.1 --seed 0 --out runs/default
fer-train --data $D --arch fercnn_s --epochs 15 --threads 1 --seed 0 --out runs/fercnn_s
# (fercnn_s was stopped by SIGTERM after epoch 8 and continued with
#  fer-train --data $D --resume runs/fercnn_s/last.pt --threads 2 --epochs 15 --out runs/fercnn_s)

# 2. the crop margin recorded in bundles (-> 0.075)
fer-edge calibrate-margin --data $D --source $V --demo

# 3. export: every candidate, INT8 with the calibration method chosen on PublicTest
X="--int8 --calib-data $D --calib-method auto --val-data $D --crop-margin 0.075"
fer-export runs/default/best.pt --out bundles/fercnn_m-flip --name fercnn_m-flip --tta-flip $X  # shipped
fer-export runs/default/best.pt --out bundles/fercnn_m --name fercnn_m $X
fer-export runs/fercnn_s/best.pt --out bundles/fercnn_s-flip --name fercnn_s-flip --tta-flip $X
fer-export runs/default/best.pt runs/fercnn_s/best.pt --out bundles/ensemble-m-s-flip \
    --name ensemble-m-s-flip --tta-flip $X

# 4. benchmark them side by side (interleaved), with the pipeline on the shared video
fer-bench --model bundles/fercnn_m-flip --model bundles/fercnn_m --model bundles/fercnn_s-flip \
    --model bundles/ensemble-m-s-flip \
    --data $D --video $V --threads 1,2 --out benchmarks/results
