#!/usr/bin/env bash
# One prepared run for a lent H100/H200 (the device tool): the GPU checks and benchmarks issue 3 asks for, in one
# call. The device image has JAX (CUDA), flax, optax, orbax, torch and transformers but not pydantic; carry it.
#
# Here, once (wheels for the device's Python 3.12):
#   echo /.whl/ >> .git/info/exclude
#   for w in pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5; do
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$w"; done
#   cp ../shared/bench/hf_torch_baseline.py bench/      # the PyTorch peer (../shared does not travel)
# Then two calls, each inside one command's time limit:
#   run(command="bash bench/device_check.sh train", carry=[".whl"], timeout_s=540)     # cuDNN, train step (issue 3)
#   run(command="bash bench/device_check.sh generate", carry=[".whl"], timeout_s=420)  # decode (10), RegMix (13)
#   run(command="bash bench/device_check.sh draft", carry=[".whl"], timeout_s=300)     # speculative decoding (25)
#   run(command="bash bench/device_check.sh serve", carry=[".whl"], timeout_s=590)     # serving (24)
set -euo pipefail
PART=${1:-train}
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
if [ "$PART" = draft ]; then
  # issue 25: speculative decoding — our engine with a draft model and with the self draft beside the target alone,
  # and transformers' plain and assisted generation on the same weights (batch 1; ours also at batch 8), bf16
  #   run(command="bash bench/device_check.sh draft", carry=[".whl"], timeout_s=300)
  timeout 280 python3 bench/decode.py --draft --batches 1,8 --prompt 128 --new 128 --dtype bfloat16 \
    --target-layers 24 --draft-layers 2 --eps 0.02 --timeout 130 --out "$OUT/decode_draft.json" 2>&1 | tail -14 \
    | tee "$OUT/decode_draft.txt" || true
  exit 0
fi
if [ "$PART" = serve ]; then
  # issue 24: our server beside `transformers serve --continuous-batching` and offline generate on the same card,
  # Sailor2-1B shape, bf16 (the image also needs fastapi, starlette, uvicorn, prometheus-client, aiohttp and their
  # pure-Python dependencies in .whl/: download them as above)
  timeout 560 python3 bench/serve.py --shape sailor2-1b --dtype bfloat16 --torch-device cuda --slots 64 \
    --max-len 1024 --requests 256 --max-tokens 128 --prompt-chars 400 --rates 4,16,inf --concurrency 16,64 \
    --start-timeout 240 --out "$OUT/serve.json" 2>&1 | tail -20 | tee "$OUT/serve.txt" || true
  exit 0
fi
if [ "$PART" = generate ]; then
  # issue 10: our decode loop beside transformers' generate on the same card (batch 1, 32, 128; prompt 128, 256 new)
  timeout 300 python3 bench/decode.py --timeout 120 --out "$OUT/decode.json" 2>&1 | tail -20 | tee "$OUT/decode.txt" \
    || true
  # issue 13: 64 RegMix 1M proxies as one program vs one after another (random rows: the image has no seqio/grain;
  # compare the step-only figures), at the CPU's batch and at a GPU-sized one
  for b in "4 128" "16 512"; do
    set -- $b
    timeout 100 python3 bench/regmix.py --synthetic --shape 1m --batch-size "$1" --seq-len "$2" --rounds 2 \
      --steps 3 --separate-runs 1 2>/dev/null | tee "$OUT/regmix_${1}x${2}.json" || true
  done
  exit 0
fi
# 1. the fused cuDNN kernel on packed batches equals the XLA reference (skipped on CPU)
python3 -m pytest -q -p no:cacheprovider tests/model/test_model_attention.py 2>&1 | tee "$OUT/cudnn_test.txt" || true
# 2. tokens/s, MFU and peak memory: Sailor2-1B shape (seq 4096) and a 4-layer 8B slice, beside transformers eager
#    and torch.compile run by bench/hf_torch_baseline.py on the same card
timeout 300 python3 bench/train_step.py --out "$OUT" 2>&1 | tee "$OUT/train_step.txt" || true
# 3. JAX-only variants of the 1B shape, each in its own time box (every finished one leaves its JSON under $OUT):
#    the packed (segment-aware cuDNN) route, and no rematerialisation at half the batch (~460 s in all, so the
#    call fits timeout_s=540 with room for the machine's start)
for v in "--remat none --batch 4" "--packed"; do
  name=$(echo "$v" | tr -d ' -')
  timeout 60 python3 bench/train_step.py --cases sailor2-1b --no-baseline --steps 5 $v --out "$OUT/variant_$name" \
    2>&1 | tail -3 | tee -a "$OUT/variants.txt" || true
done
