#!/usr/bin/env bash
# QAT from the first step, beside PTQ and fine-tuned QAT (issue 11, item 5): trains each named run's
# model again from scratch with tfmot wrapping it from step one, int8 and 4-bit weights, with the
# float run's own configuration (train.json). A full training run each, so not in the default study;
# it writes qat_scratch_<scheme>.json into the study's run folders, which the report then shows.
#   benchmarks/qat_from_scratch.sh [runs...]   (default: the three MLPs and the MNIST CNN)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=("${@:-mnist_mlp fashion_mnist_mlp cifar10_mlp mnist_cnn}")
for run in ${runs[*]}; do
  for scheme in int8 w4a8; do
    echo "== $run $scheme"
    ./tfq.sh qat_scratch --dataset="${run%_*}" --model="${run##*_}" --scheme="$scheme"
  done
done
./tfq.sh report --datasets=mnist,fashion_mnist,cifar10 --models=mlp,cnn
