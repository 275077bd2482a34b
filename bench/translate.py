"""Translation engines: CTranslate2 (int8 and float32) against transformers (float32) on the same random
NLLB-architecture model, through `sailor2_jax.data.translate.engine` (the code `sailor2-jax translate` runs).

    .venv/bin/python bench/translate.py [--shape small|nllb-600m] [--sentences 64] [--beam 1 4]

The weights are random (no model can be downloaded here), so outputs are noise and stop at random lengths: the
figure of merit is generated tokens per second (per CPU-second of the process, and by the wall clock), with every
engine decoding the same sentences up to the same `max_output_tokens`. Shapes: `small` (d 512, 6+6 layers, 8
heads, FFN 2048, vocabulary 32K) and `nllb-600m` (NLLB-200-distilled-600M: d 1024, 12+12 layers, 16 heads, FFN
4096, vocabulary 256K).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

SHAPES = {
    "small": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8,
                  decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048, vocab_size=32_000),
    "nllb-600m": dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                      decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, vocab_size=256_206),
}


def build(out: Path, shape: str) -> Path:
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    from sailor2_jax.demo.fixtures import make_tiny_translator

    from transformers import AutoTokenizer

    make_tiny_translator(out)  # the tokenizer (and a tiny model, replaced below)
    tok = AutoTokenizer.from_pretrained(out)
    shape_cfg = dict(SHAPES[shape])
    vocab = shape_cfg.pop("vocab_size")
    tok.add_tokens([f"w{i}" for i in range(vocab - len(tok))])  # fill the vocabulary: the output layer's real size
    tok.save_pretrained(out)
    cfg = M2M100Config(**shape_cfg, vocab_size=len(tok), max_position_embeddings=1024, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2, decoder_start_token_id=2, init_std=0.05)
    torch.manual_seed(0)
    M2M100ForConditionalGeneration(cfg).eval().save_pretrained(out)
    return out


def run(engine, sentences: list[str]) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    outputs = engine.translate(sentences, "en", "th")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(engine.count_tokens(outputs)) - 2 * len(outputs)
    return {"tokens": tokens, "wall": wall, "cpu": cpu, "tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu}


def main() -> None:
    from sailor2_jax.embedded.synthetic import udhr_lines
    from sailor2_jax.data.translate.engine import CTranslate2Engine, TransformersEngine, convert_to_ctranslate2
    from sailor2_jax.data.translate.segment import sentences as split

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=list(SHAPES), default="small")
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--beam", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--max-output-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads per engine (0: each engine's default)")
    ap.add_argument("--out", default="runs/bench-translate")
    args = ap.parse_args()
    out = Path(args.out)
    model = build(out / args.shape, args.shape)
    ct2 = convert_to_ctranslate2(model, out / f"{args.shape}-ct2")
    pool = [s for line in udhr_lines("en") for s in split(line, "en")]
    sentences = [pool[i % len(pool)] for i in range(args.sentences)]
    results = []
    for beam in args.beam:
        common = dict(beam_size=beam, batch_size=32, max_output_tokens=args.max_output_tokens, threads=args.threads)
        engines = {"ctranslate2 int8": lambda: CTranslate2Engine(ct2, device="cpu", compute_type="int8", **common),
                   "ctranslate2 float32": lambda: CTranslate2Engine(ct2, device="cpu", compute_type="float32",
                                                                    **common),
                   "transformers float32": lambda: TransformersEngine(model, device="cpu", compute_type="float32",
                                                                      **common)}
        for name, make in engines.items():
            engine = make()
            run(engine, sentences[:4])  # warm-up
            r = {"engine": name, "beam": beam, **run(engine, sentences)}
            results.append(r)
            print(f"beam {beam}  {name:22} {r['tokens']:6} tokens  {r['tokens_per_cpu_s']:8.1f} tokens/CPU-s  "
                  f"{r['tokens_per_s']:8.1f} tokens/s", flush=True)
            del engine
    (out / "results.json").write_text(json.dumps({"shape": args.shape, "sentences": args.sentences,
                                                  "threads": args.threads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
