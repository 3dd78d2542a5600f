#!/usr/bin/env bash
# The harness against the tutorials' image-by-image loop, int8 and float32, MLP and CNN, on the
# 10,000 MNIST test images, one thread (after the pipeline has made the flatbuffers). Runs on a
# scratch copy of the files, so the study's eval_*.json stay as the study measured them.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"; trap 'rm -rf "$scratch"' EXIT
for model in mlp cnn; do
  mkdir -p "$scratch/mnist_$model"
  cp artifacts/mnist_"$model"/{int8,float32}.{tflite,json} "$scratch/mnist_$model/"
  ./tfq.sh evaluate --dataset=mnist --model="$model" --mode=int8,float32 --compare_naive --artifacts="$scratch"
done
