"""`make demo`: the whole Sailor2 path on the embedded data with a tiny model, every stage real.

Stages: (0) cleaning a planted-trouble corpus in all 15 languages on datatrove (substring dedup included), every
document accounted for, then translation, quality classifiers and the top 15 % per language →
(1) a random tiny Qwen2.5-architecture base checkpoint with the real Qwen2.5 tokenizer → (2) LlamaPro expansion (tied →
untied, as for Sailor2-1B) → (3) import onto a device mesh and a forward pass on UDHR text in ten of the 15 languages,
checked against `transformers` (and the Splash TPU attention kernel against XLA attention) → (4) export and reload
in `transformers` → (4b) a RegMix search of the stage-1 mixture (regmix/demo.py) → (5) stage-1 pre-training on
the mixture it found through the real tokenizer, seqio and grain →
(6) resume from the checkpoint → (7) stage 2 with all 15 languages and stage-1 replay → (8) SFT stage 1 on the
embedded conversations, `select-sft`, SFT stage 2 on the selection, DPO on the embedded preference pairs → (9) export
of the final checkpoint, checked in `transformers` → (9b-d) a reward model trained by Bradley-Terry, one on-policy
round with the language-consistency verifier, on-policy DPO → (10) chat generation from
the exported model in three languages → (11) the pre-training step compiled for a TPU slice by the real TPU
compiler, with no TPU → (12) the base, expanded and final models evaluated on held-out UDHR tasks (perplexity,
multiple choice, translation) in all 15 languages, compared in one table.
Each stage writes under `OUT/` and the run ends with `OUT/summary.json`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import jax
import numpy as np
from rich.console import Console

from sailor2_jax.aot.demo import tpu_compile_stage
from sailor2_jax.config import DATA_DIR, ComputeConfig, MeshConfig, load_model_config
from sailor2_jax.eval.demo import eval_stage
from sailor2_jax.generate.demo import generate_stage
from sailor2_jax.post.demo import post_training_stage
from sailor2_jax.post.preference_demo import preference_stage
from sailor2_jax.regmix.demo import regmix_stage
from sailor2_jax.sharding import make_mesh

DEMO_LANGUAGES = ("en", "zh", "vi", "id", "th", "ms", "my", "km", "lo", "jv")
console = Console()
FP32 = ComputeConfig(dtype="float32", attention="xla")  # parity checks against transformers run in fp32


def _step(title: str):
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def make_base_checkpoint(out: Path, seed: int = 0) -> Path:
    """A random Qwen2.5-0.5B-like base (tied embeddings, real vocabulary rows) at a tiny width, as a HF directory."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from sailor2_jax.tokenizer import save_hf_tokenizer

    cfg = load_model_config("tiny")
    hf_cfg = Qwen2Config(**{k: v for k, v in cfg.to_hf("float32").items() if k not in ("architectures", "model_type")})
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # trained models have non-trivial biases and norms: so should the demo's
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(out)
    save_hf_tokenizer(out)
    return out


def demo_texts(per_language_tokens: int = 128) -> tuple[list[str], np.ndarray, np.ndarray]:
    """First UDHR document of each demo language, tokenised and cut to a fixed length (rows of one batch)."""
    from sailor2_jax.tokenizer import EOS_ID, load_tokenizer

    tok = load_tokenizer()
    langs, rows, segs = [], [], []
    for lang in DEMO_LANGUAGES:
        first_line = (DATA_DIR / "udhr" / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()[0]
        text = json.loads(first_line)["text"]
        ids = tok.encode(text).ids[:per_language_tokens]
        pad = per_language_tokens - len(ids)
        langs.append(lang)
        rows.append(ids + [EOS_ID] * pad)
        segs.append([1] * len(ids) + [0] * pad)
    return langs, np.asarray(rows, np.int32), np.asarray(segs, np.int32)


def torch_logits(hf_dir: Path, tokens: np.ndarray) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


def clean_stage(out: Path, summary: dict) -> None:
    from sailor2_jax.data.clean import run_demo as run_clean_demo

    _step("0. data cleaning on datatrove: URL/exact/near/substring dedup, heuristics, language ID, frequent lines")
    result = run_clean_demo(out / "clean")
    if not result["documents"]["balanced"]:
        raise RuntimeError(f"cleaning lost documents: {result['documents']}")
    summary["clean"] = {**result["documents"], "planted": result["planted"],
                        "summary": str(out / "clean" / "summary.json"), "chart": str(out / "clean" / "summary.png")}
    from sailor2_jax.data.quality.demo import run_stage2_demo

    _step("0b. stage-2 data: translation (tiny NLLB-style model, CTranslate2), fastText quality, top 15 % kept")
    summary["stage2_data"] = run_stage2_demo(out / "stage2_data", out / "clean" / "kept")


def logits(model, tokens: np.ndarray) -> np.ndarray:
    """A jitted forward pass of an NNX model (split into graph and state at the jit boundary)."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda state, tokens: nnx.merge(graphdef, state)(tokens))
    return np.asarray(forward(state, tokens))


def model_stage(out: Path, summary: dict) -> None:
    from sailor2_jax.model.expand import expand_hf_dir
    from sailor2_jax.model.hf import export_hf, import_hf
    from sailor2_jax.model.init import with_compute

    t = _step("1. base checkpoint: random tiny Qwen2.5 architecture + the real Qwen2.5 tokenizer")
    base = make_base_checkpoint(out / "base")
    console.print(f"wrote {base} ({time.perf_counter() - t:.1f}s)")

    _step("2. LlamaPro block expansion 4 → 8 layers, untying the embeddings (the Sailor2-1B recipe)")
    expansion = expand_hf_dir(base, out / "expanded", 8, untie=True, overwrite=True)
    new = [i for i, n in enumerate(expansion["is_new_layer"]) if n]
    console.print(f"new layers at {new}; o_proj and down_proj zeroed there")

    _step("3. import onto the device mesh and run UDHR text in several languages")
    mesh = make_mesh(MeshConfig(data=1, fsdp=-1, tensor=1))
    model = import_hf(out / "expanded", mesh, FP32)
    langs, tokens, segs = demo_texts()
    with jax.set_mesh(mesh):
        ours = logits(model, tokens)
    real = segs.astype(bool)
    base_ref = torch_logits(base, tokens)
    identity = float(np.abs(ours - base_ref)[real].max())
    console.print(f"{len(langs)} languages ({', '.join(langs)}), {int(real.sum())} tokens on {mesh.size} devices; "
                  f"expanded model vs base model in transformers: max |Δlogit| = {identity:.2e}")
    # the TPU attention kernel (Splash, run here by Pallas's interpreter) on one row per device
    rows = mesh.size * (len(tokens) // mesh.size)
    with jax.set_mesh(mesh):
        splash_model = with_compute(model, FP32.replace(attention="splash"))
        splash = float(np.abs(logits(splash_model, tokens[:rows]) - ours[:rows])[real[:rows]].max())
    console.print(f"Splash attention kernel vs XLA attention on {rows} rows: max |Δlogit| = {splash:.2e}")

    _step("4. export to Hugging Face safetensors and reload with transformers")
    exported = export_hf(model, out / "export", tokenizer=base, overwrite=True)
    reloaded = torch_logits(exported, tokens)
    roundtrip = float(np.abs(ours - reloaded)[real].max())
    from transformers import AutoTokenizer

    from sailor2_jax.tokenizer import load_tokenizer
    probe = "Xin chào thế giới. สวัสดีชาวโลก. Kumusta mundo."
    same_ids = AutoTokenizer.from_pretrained(exported)(probe).input_ids == load_tokenizer().encode(probe).ids
    console.print(f"[bold green]largest logit difference, ours vs transformers on the exported model: "
                  f"{roundtrip:.2e}[/] (logit scale {np.abs(reloaded).max():.2f}); tokenizer ids agree: {same_ids}")
    summary["model"] = {"base": str(base), "expanded_layers": expansion["layers"], "new_layers": new,
                        "languages": langs, "max_abs_logit_diff_expanded_vs_base": identity,
                        "max_abs_logit_diff_splash_vs_xla": splash,
                        "max_abs_logit_diff_export_vs_transformers": roundtrip, "tokenizer_ids_agree": same_ids}
    if roundtrip > 1e-3 * max(1.0, float(np.abs(reloaded).max())) or max(identity, splash) > 1e-3 or not same_ids:
        raise RuntimeError(f"demo parity check failed: {summary['model']}")


def _train(name: str, out: Path, overrides: list[str], base: str = "demo_pretrain"):
    from sailor2_jax.config import find_config, load
    from sailor2_jax.train.config import TrainConfig
    from sailor2_jax.train.loop import train

    cfg = load(TrainConfig, find_config("train", base), ["log.progress=false", *overrides])
    result = train(cfg, out / name)
    rows = map(json.loads, (out / name / "metrics.jsonl").read_text().splitlines())
    losses = [r["loss"] for r in rows if "loss" in r]  # (a file source also logs what it read, at the start)
    console.print(f"{name}: steps {result.resumed_from or 0} → {result.step}, loss {losses[0]:.3f} → "
                  f"{losses[-1]:.3f} ({len(losses)} logged steps; {out / name}/metrics.jsonl, curves in metrics.png)")
    return result, losses


def train_stage(out: Path, summary: dict, rates_file: Path) -> None:
    from sailor2_jax.model.hf import export_hf
    from sailor2_jax.model.source import open_run

    expanded = out / "expanded"
    for run in ("stage1", "stage2", "sft", "select", "sft_stage2", "dpo"):  # a rerun of the demo starts its training runs afresh
        shutil.rmtree(out / run, ignore_errors=True)
    _step("5. continual pre-training, stage 1: the RegMix mixture (UDHR through tokenizer → seqio → grain)")
    # a 10-step schedule stopped after step 6 (as a preempted run would be), then resumed to its end
    stage1 = ["model=null", f"init.hf_dir={expanded}", "optimizer.schedule.total_steps=10", "checkpoint.every=3",
              "log.eval_every=3", f"data.mixture_overrides=[mixture.rates_file={rates_file.absolute()}]"]
    _, first = _train("stage1", out, [*stage1, "steps=6"])
    _step("6. resume: the same run continues from its latest checkpoint (model, optimiser, RNG, data iterator)")
    resumed, losses = _train("stage1", out, [*stage1, "steps=10"])
    if resumed.resumed_from != 6:
        raise RuntimeError(f"stage 1 did not resume from step 6: {resumed.resumed_from}")
    _step("7. stage 2 (annealing): all 15 languages incl. the low-resource ones, 20 % stage-1 replay")
    # the annealing phase continues stage 1's AdamW state with a decaying learning rate (no new warmup)
    stage2 = ["model=null", f"init.checkpoint={out / 'stage1'}", "init.optimizer_state=true",
              "data.mixture=demo_stage2", "steps=4", "checkpoint.every=4", "log.eval_every=0",
              "optimizer.schedule={kind: wsd, peak_lr: 3.0e-3, warmup_steps: 0, decay_steps: 4, final_lr: 3.0e-4}"]
    _, stage2_losses = _train("stage2", out, stage2)
    post = post_training_stage(out, out / "stage2", _train, _step, console)
    _step("9. export the DPO checkpoint to Hugging Face and check it in transformers")
    model, step = open_run(out / "dpo", dtype="float32")  # compared in fp32, as transformers runs here
    exported = export_hf(model, out / "hf_final", tokenizer=out / "base", overwrite=True)
    _, tokens, segs = demo_texts()
    ours = logits(model, tokens)
    diff = float(np.abs(ours - torch_logits(exported, tokens))[segs.astype(bool)].max())
    console.print(f"[bold green]trained model (step {step}) in transformers: max |Δlogit| = {diff:.2e}")
    summary["train"] = {"stage1_losses": losses, "stage1_first_run": first, "stage2_losses": stage2_losses,
                        "post_training": post, "exported": str(exported),
                        "max_abs_logit_diff_trained_export_vs_transformers": diff}
    if diff > 1e-3 * max(1.0, float(np.abs(ours).max())):
        raise RuntimeError(f"exported trained model disagrees with ours: {diff}")


def run_demo(out: str | Path) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"devices": jax.device_count(), "backend": jax.default_backend()}
    t0 = time.perf_counter()
    clean_stage(out, summary)
    model_stage(out, summary)
    train_stage(out, summary, regmix_stage(out, summary))
    preference_stage(out, summary, console, _step)
    _step("10. generate from the exported DPO model with the chat template (en, vi, th; 2 samples each)")
    generate_stage(out, summary, console)
    _step("11. the pre-training step and the generation engine compiled for a v5p-8 slice by the TPU compiler, here")
    tpu_compile_stage(out, summary, console)
    _step("12. evaluate the base, expanded and final models on held-out UDHR tasks in 15 languages")
    eval_stage(out, summary, console)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    console.rule(f"[bold]demo finished in {summary['seconds']}s — {out / 'summary.json'}")
    return summary
