"""The long-context stage's data: a task with `min_tokens` keeps only documents at least that long, and the shipped
long-context mixture keeps stage 2's share of every language while a third of each comes from its long documents."""

from __future__ import annotations

import pytest
from data_helpers import write_config

from sailor2_jax.config import DATA_DIR
from sailor2_jax.data import mixture
from sailor2_jax.data.config import load_data_config


@pytest.mark.slow  # seqio/TensorFlow, like the other seqio task tests
def test_min_tokens_keeps_only_long_documents(tmp_path):
    import seqio

    from sailor2_jax.data import tasks

    files = [str(DATA_DIR / "udhr" / "vi.jsonl")]
    d = {"tasks": [{"name": "all_vi_lc", "language": "vi", "source": {"type": "jsonl", "files": files}},
                   {"name": "long_vi_lc", "language": "vi", "min_tokens": 40,
                    "source": {"type": "jsonl", "files": files}}],
         "mixture": {"name": "long_vi_mix", "rates": {"all_vi_lc": 2, "long_vi_lc": 1}}}
    tasks.register(load_data_config(write_config(tmp_path / "c.yaml", d)))
    every = [len(ex["tokens"]) for ex in tasks.iterate_task(seqio.get_mixture_or_task("all_vi_lc"))]
    long = [len(ex["tokens"]) for ex in tasks.iterate_task(seqio.get_mixture_or_task("long_vi_lc"))]
    assert long == [n for n in every if n >= 40] and 0 < len(long) < len(every)


def test_long_context_mixture_keeps_stage2_language_shares():
    lc_tasks, lc = mixture.resolve(load_data_config("long_context"))
    s2_tasks, s2 = mixture.resolve(load_data_config("stage2"))
    assert mixture.language_shares(lc_tasks, lc) == pytest.approx(mixture.language_shares(s2_tasks, s2))
    for lang in ("th", "vi", "my"):
        assert lc[f"long_{lang}"] == pytest.approx(lc[f"hq_{lang}"] / 2, rel=1e-3)  # a third of the language
