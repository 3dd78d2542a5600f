#!/usr/bin/env bash
# The harness's batch-1 latency against LiteRT's own benchmark tool (ai_edge_litert/tools/
# benchmark_litert_model.py, CompiledModel API, CPU, one thread), on the same files of one run.
#   benchmarks/latency_vs_litert_tool.sh [dataset] [model] [modes...]   (after the study)
set -euo pipefail
cd "$(dirname "$0")/.."
dataset="${1:-cifar10}"; model="${2:-cnn}"; shift $(( $# < 2 ? $# : 2 ))
modes=("${@:-float32 int8 qat_int8}")
run="artifacts/${dataset}_${model}"
tool="$(.venv/bin/python -c 'import ai_edge_litert, os; print(os.path.dirname(ai_edge_litert.__file__))')/tools/benchmark_litert_model.py"
out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
for mode in ${modes[*]}; do
  .venv/bin/python "$tool" --model="$run/$mode.tflite" --num_threads=1 --warmup_runs=20 --num_runs=1000 \
    --result_json="$out/$mode.json" > /dev/null 2>&1
  .venv/bin/python - "$run" "$mode" "$out/$mode.json" <<'PY'
import json, sys
run, mode, tool = sys.argv[1:]
h = json.load(open(f"{run}/eval_{mode}.json"))["latency_us"]
t = json.load(open(tool))["latency"]
print(f"{mode:10s} harness p50 {h['p50']:8.1f} us (rounds {h['spread'][0]:.1f}-{h['spread'][1]:.1f})   "
      f"LiteRT tool median {1000 * t['median_ms']:8.1f} us (p5 {1000 * t['p5_ms']:.1f}, p95 {1000 * t['p95_ms']:.1f})")
PY
done
