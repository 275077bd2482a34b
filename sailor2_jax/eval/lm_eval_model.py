"""lm-eval bridge: our JAX model as lm-eval's `sailor2_jax` model (`loglikelihood`, `loglikelihood_rolling`,
`generate_until`), so any lm-eval task runs on it.

lm-eval finds models only in its own registry and loads no plugins, so this module registers the model when it is
imported and, run as a program, is lm-eval's command line with the model registered (all lm-eval flags work):

    python -m sailor2_jax.eval.lm_eval_model run --model sailor2_jax \\
        --model_args path=runs/demo/hf_final,dtype=float32 --tasks my_task --include_path my_tasks/ \\
        --output_path runs/lm_eval

or from Python: `import sailor2_jax.eval.lm_eval_model` and `lm_eval.simple_evaluate(model="sailor2_jax", ...)`.

model_args: `path` (an HF directory) or `checkpoint` (a training run), `tokenizer`, `dtype` (bfloat16 default,
float32), `mesh` (DATA,FSDP,TENSOR; default all devices on data, written with `x` or `;` in lm-eval's comma-split
argument string: `mesh=2x2x2`), `max_length` (default: the model's max_position_embeddings), `max_gen_toks` (256),
`batch_size` (16; lm-eval's `--batch_size` sets it too).

Requests are encoded and windowed exactly as lm-eval's own HF model does (eval/score.py); tests compare the
log-likelihoods and generations with lm-eval's `hf` model on the same directory.
"""

from __future__ import annotations

import argparse

import lm_eval.models  # noqa: F401  lm-eval fills its registry with its own models only while it is empty
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from sailor2_jax.eval.metrics import cut_at_stop
from sailor2_jax.eval.score import Scorer, encode_pair, pair_row, rolling_rows


@register_model("sailor2_jax")
class Sailor2JaxLM(LM):
    def __init__(self, path: str | None = None, checkpoint: str | None = None, tokenizer: str | None = None,
                 dtype: str = "bfloat16", mesh: str = "-1x1x1", max_length: int | None = None,
                 max_gen_toks: int = 256, batch_size: int | str = 16, **ignored):
        super().__init__()
        from sailor2_jax.config import MeshConfig
        from sailor2_jax.generate.load import load

        if (path is None) == (checkpoint is None):
            raise ValueError("sailor2_jax model_args: give exactly one of path=HF_DIR and checkpoint=RUN_DIR")
        self.loaded = load(argparse.Namespace(model=path, checkpoint=checkpoint, tokenizer=tokenizer, dtype=dtype,
                                              mesh=MeshConfig.parse(str(mesh))))
        self.tok = self.loaded.tokenizer
        model_len = self.loaded.generator.cfg.max_position_embeddings
        self.max_length = min(int(max_length), model_len) if max_length else model_len
        self.max_gen_toks = int(max_gen_toks)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16  # "auto": our default
        self.scorer = Scorer(self.loaded.generator, batch_size=self.batch_size)
        self.prefix_id = self.loaded.eos_ids[0]

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        rows = [pair_row(*encode_pair(self.encode, context, continuation), self.max_length, self.prefix_id)
                for context, continuation in (r.args for r in requests)]
        with tqdm(total=len(rows), desc="loglikelihood", disable=disable_tqdm) as bar:
            return self.scorer.score(rows, on_rows=bar.update)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows = [rolling_rows(self.encode(r.args[0]), self.max_length, self.prefix_id) for r in requests]
        with tqdm(total=sum(map(len, windows)), desc="loglikelihood_rolling", disable=disable_tqdm) as bar:
            scores = self.scorer.score([w for ws in windows for w in ws], on_rows=bar.update)
        out, k = [], 0
        for ws in windows:
            out.append(sum(s for s, _ in scores[k:k + len(ws)]))
            k += len(ws)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        from sailor2_jax.generate.sampling import SamplingConfig

        eos_text = self.tok.decode([self.prefix_id], skip_special_tokens=False)
        groups: dict[tuple, list[int]] = {}
        settings = []
        for i, r in enumerate(requests):
            kwargs = dict(r.args[1])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            settings.append((tuple(dict.fromkeys([*until, eos_text])), max_new, temperature))
            groups.setdefault((max_new, temperature), []).append(i)
        out = [""] * len(requests)
        with tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm) as bar:
            for (max_new, temperature), idx in groups.items():
                keep = self.max_length - max_new
                if keep < 1:
                    raise ValueError(f"max_gen_toks {max_new} leaves no room for a context of max_length "
                                     f"{self.max_length}")
                prompts = [self.encode(requests[i].args[0])[-keep:] or [self.prefix_id] for i in idx]
                completions = self.loaded.generator.generate(
                    prompts, sampling=SamplingConfig(temperature=temperature), max_new_tokens=max_new,
                    eos_ids=self.loaded.eos_ids, batch_size=self.batch_size, on_batch=bar.update)
                for i, (c,) in zip(idx, completions):
                    ids = c.token_ids[:-1] if c.finish_reason == "stop" else c.token_ids
                    out[i] = cut_at_stop(self.tok.decode(ids, skip_special_tokens=True), settings[i][0])
        return out


def main() -> None:
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    main()
