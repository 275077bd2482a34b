"""`sailor2-jax eval-import`: benchmark data → task records (and, for SailCompass, a tasks file). Nothing is
fetched: the sources are downloads the user made."""

from __future__ import annotations

import argparse

NAME = "eval-import"
HELP = ("turn downloaded benchmarks into eval tasks: `sailcompass` (SailCompass' exact protocol from its checkout and "
        "data), the public releases of flores/xcopa/belebele/m3exam/tydiqa/xquad, or a Sea-WildBench release")
SOURCES = ("sailcompass", "sea-wildbench", "flores", "xcopa", "belebele", "m3exam", "tydiqa", "xquad")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", choices=SOURCES, help="what --src is")
    p.add_argument("--src", required=True, help="sailcompass: a sail-sg/sailcompass checkout (its configs are "
                   "parsed, never run); sea-wildbench: the release's JSONL/Parquet/JSON file; otherwise the dataset's "
                   "public release (file or directory, see eval/public_release.py)")
    p.add_argument("--data", help="sailcompass: the sail/Sailcompass_data download (the directory holding "
                   "m3exam/, xcopa/, flores200/, ...)")
    p.add_argument("--output-dir", required=True, help="where the task files go")
    p.add_argument("--only", nargs="+", metavar="TASK", help="sailcompass: import only these configs (by file "
                   "name without its hash, e.g. m3exam_vi xcopa_th_ppl)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    src, out = Path(args.src).expanduser(), Path(args.output_dir).expanduser()
    if args.source == "sailcompass":
        from sailor2_jax.eval.sailcompass import import_sailcompass

        if not args.data:
            raise ValueError("eval-import sailcompass needs --data (the Sailcompass_data download)")
        counts = import_sailcompass(src, Path(args.data).expanduser(), out, args.only)
        width = max(len(n) for n in counts)
        for name, c in counts.items():
            print(f"{name:<{width}}  {c['written']:>6} records  {c['rejected']:>4} rejected  (SailCompass {c['abbr']})")
        print(f"wrote {out / 'sailcompass.yaml'} and {len(counts)} record files under {out / 'data'}; run: "
              f"sailor2-jax eval --model HF_DIR --tasks {out / 'sailcompass.yaml'} --output-dir runs/eval/sailcompass")
    elif args.source == "sea-wildbench":
        from sailor2_jax.eval.judge_data import convert_sea_wildbench

        kept, rejected = convert_sea_wildbench(src, out / "sea_wildbench.jsonl")
        print(f"wrote {out / 'sea_wildbench.jsonl'}: {kept} prompts ({rejected} rejected)")
    else:
        from sailor2_jax.eval.public_release import CONVERTERS

        CONVERTERS[args.source](src, out)
    return 0
