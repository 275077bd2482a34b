"""`sailor2-jax regmix --config CFG --output-dir DIR`: search a stage's data mixture with RegMix (sample → train proxies →
fit → search); a rerun skips what DIR already holds."""

from __future__ import annotations

import argparse

from sailor2_jax.commands._args import renamed

from sailor2_jax.train import multihost

NAME = "regmix"
HELP = ("search a stage's data mixture with RegMix: sample mixtures, train many small proxies at once, fit LightGBM, "
        "search; writes DIR/rates.json for mixture.rates_file (a rerun resumes and skips what DIR holds)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="a RegMix config: YAML path or packaged name (demo, sailor2_stage1)")
    renamed(p, "--out", "--output-dir")
    p.add_argument("--output-dir", required=True, help="the search's directory (mixtures, proxy results, fit, rates.json)")
    multihost.add_arguments(p)
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="dotted config overrides, e.g. sample.num_mixtures=1024 proxy.steps=500")


def run(args: argparse.Namespace) -> int:
    multihost.initialize_from(args)

    from sailor2_jax.regmix.config import load_regmix_config
    from sailor2_jax.regmix.run import run_regmix

    cfg = load_regmix_config(args.config, args.overrides)
    summary = run_regmix(cfg, args.output_dir)
    print(f"rates for mixture.rates_file: {args.output_dir}/rates.json; predicted {cfg.fit.target} of the losses "
          f"{summary['predicted']['answer']:.4f} (prior's mixture: {summary['predicted']['prior']:.4f})")
    return 0
