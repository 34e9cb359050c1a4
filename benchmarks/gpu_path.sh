#!/usr/bin/env bash
# The GPU path in one prepared run (issue 15, item 6), on a machine with a CUDA GPU, no network
# and the repository checked out in the current folder. Writes its logs and JSON to $OUT.
#
# Needs: .whl/ with the wheels the GPU image lacks (trl, datasets, dill, multiprocess,
# bitsandbytes, rank-bm25; see the device tool's notes for `pip download`), and .gpu/ with SmolLM2's
# and MiniLM's configs and tokenizers (no weights), written here by
# `python benchmarks/gpu_stand_ins.py --pack .gpu`; there that script gives both models random
# weights of their real shapes (no Hub, and 64 MiB of files at most).
#
#   OUT=/tmp/gpu bash benchmarks/gpu_path.sh
#
# Parts, each under its own time limit so that one hang cannot hide the others:
#   1. bf16 / 8-bit / 4-bit backbones through lab.models.load, 2 timed hybrid steps each;
#   2. a short hybrid run in bf16 through the CLI (lab train);
#   3. benchmarks/bench_loop.py on the GPU: naive loop, TRL GRPO, kit hybrid, kit rl-only;
#   4. the trainer tests on CUDA (LAB_TEST_DEVICE=cuda; fp32, the tests' tolerances).
set -u
OUT=${OUT:-/tmp/gpu-path}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/standins/site:/tmp/site:$PWD LAB_CACHE=/tmp/standins/cache HF_HUB_OFFLINE=1 \
  PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
timeout 60 python3 benchmarks/gpu_stand_ins.py --src .gpu --out /tmp/standins 2>&1 | tail -1 || exit 1

part() {  # part NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? after $((SECONDS - start)) s"
  tail -n 25 "$OUT/$name.log"
}

part quantized 90 python3 benchmarks/gpu_check.py --model-dir /tmp/standins/cache/smollm2-135m --shapes none \
  --quantized --steps 2 --out "$OUT/gpu_quantized.json"
part train_bf16 60 python3 -m lab train --model smollm2-135m --device cuda --dtype bfloat16 --steps 4 \
  --prompts-per-step 16 --samples-per-prompt 4 --max-new-tokens 64 --out /tmp/run-bf16
cp /tmp/run-bf16/history.csv "$OUT/train_bf16_history.csv" 2>/dev/null
part bench 170 python3 benchmarks/bench_loop.py --device cuda --rounds 1 --steps 2 --json-out "$OUT/bench.json"
part tests 110 env LAB_TEST_DEVICE=cuda LAB_DTYPE=float32 python3 -m pytest -q -n 6 -p no:cacheprovider -rf \
  --junitxml="$OUT/tests.xml" \
  tests/test_trainer.py tests/test_trainer_parity.py tests/test_policy_updates.py tests/test_mixes.py \
  tests/test_guards.py tests/test_fast_paths.py
