#!/usr/bin/env bash
# The harness against the tutorials' image-by-image loop, int8 and float32, MLP and CNN, on the
# 10,000 MNIST test images, one thread (after the pipeline has made the flatbuffers).
set -euo pipefail
cd "$(dirname "$0")/.."
for model in mlp cnn; do
  ./tfq.sh evaluate --dataset=mnist --model="$model" --mode=int8,float32 --compare_naive
done
