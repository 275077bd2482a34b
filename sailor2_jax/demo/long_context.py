"""Long context (docs/long_context.md): a short continual pre-training stage of the tiny model at 4x its stage-2
length, with YaRN RoPE scaling and the sequence split over a `context` mesh axis of 4 of the 8 fake devices
(context parallelism: each device holds two of the eight chunks of every row, K/V all-gathered per layer), then the
passkey / needle-in-a-haystack evaluation in all 15 languages on the result, with its depth × length heat map. The
tiny model cannot retrieve a key (its exact match is near 0): the stage shows the machinery run end to end."""

from __future__ import annotations

import json
import math
import shutil

import yaml

from sailor2_jax.demo.stage import Context, StageResult
from sailor2_jax.languages import LANGUAGES
from sailor2_jax.model import run_dir

TITLE = "long context: YaRN + context parallelism (context=4) on the tiny model, then passkey retrieval"

SEQ_LEN = 512     # the demo's stage 2 trained at 128
LENGTHS = [256, 512]  # (a Burmese needle and question alone take ~120 tokens)
DEPTHS = [0.0, 1.0]


def run(ctx: Context) -> StageResult:
    out = ctx.out / "long_context"
    shutil.rmtree(out, ignore_errors=True)
    # stage 2's model (expanded, untied) with YaRN stretching its 128 trained positions 4x
    model = run_dir.read_config(ctx.out / "stage2")["model"] | {
        "max_position_embeddings": SEQ_LEN,
        "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}}
    _, losses = ctx.train("long_context", [
        f"model={json.dumps(model)}", f"init.checkpoint={ctx.out / 'stage2'}", "init.optimizer_state=false",
        "data.mixture=demo_stage2", f"data.seq_len={SEQ_LEN}", "data.batch_size=4",
        "mesh={data: 1, fsdp: 2, context: 4, tensor: 1}", "compute.remat=none",
        "steps=3", "checkpoint.every=3", "log.eval_every=0",
        "optimizer.schedule={kind: wsd, peak_lr: 3.0e-4, warmup_steps: 1, decay_steps: 1, final_lr: 3.0e-5}"])

    tasks = ctx.out / "long_context_passkey.yaml"
    tasks.write_text(yaml.safe_dump({"max_length": SEQ_LEN, "batch_size": 32, "prefill_chunk": 128, "tasks": [
        {"name": "passkey", "type": "passkey", "lengths": LENGTHS, "depths": DEPTHS, "max_new_tokens": 6}]}))
    ctx.run_command(["eval", "--checkpoint", str(out), "--tasks", str(tasks), "--output-dir",
                     str(ctx.out / "passkey"), "--name", "tiny long-context", "--dtype", "float32"])
    results = json.loads((ctx.out / "passkey" / "results.json").read_text())["tasks"]["passkey"]
    cells = [k for k in results if k.startswith("exact_match/len")]
    heat_map = ctx.out / "passkey" / "passkey.png"
    ctx.console.print(f"passkey exact match {results['exact_match']:.1f} % over {len(LANGUAGES)} languages x "
                      f"{len(LENGTHS)} lengths x {len(DEPTHS)} depths; heat map {heat_map}")
    return StageResult(
        {"losses": losses, "passkey_exact_match": results["exact_match"], "heat_map": str(heat_map),
         "mesh": "data 1 x fsdp 2 x context 4 x tensor 1"},
        {"three finite losses with the sequence split 4 ways": len(losses) == 3 and all(map(math.isfinite, losses)),
         "passkey scored in all 15 languages": all(f"exact_match/{lang}" in results for lang in LANGUAGES),
         "passkey grid complete": len(cells) == len(LENGTHS) * len(DEPTHS),
         "heat map written": heat_map.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"})
