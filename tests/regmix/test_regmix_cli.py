"""`sailor2-jax regmix` on the embedded demo data (real tokenizer, seqio, grain), kept tiny: every output, the rates
file read back by `inspect-data`, a rerun that skips everything, a search that grows, a directory that refuses
another setup."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sailor2_jax.cli import main

SMALL = ["sample.num_mixtures=16", "proxy.per_program=8", "proxy.steps=3", "proxy.checkpoint_every=2",
         "proxy.log_every=1", "proxy.batch_size=2", "proxy.seq_len=32",
         "proxy.model={base: regmix-1m, hidden_size: 32, intermediate_size: 64, num_heads: 2, num_kv_heads: 2, "
         "head_dim: 16}", "fit.lightgbm={min_data_in_leaf: 2}", "search.num_samples=4000", "search.top_k=32"]


def _lines(path):
    return path.read_text().splitlines()


@pytest.mark.slow
def test_regmix_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["regmix", "--config", "demo", "--output-dir", str(out), *SMALL]) == 0
    languages = ["en", "zh", "vi", "id", "th", "ms", "my", "tl", "km"]  # demo_stage1's, in LANGUAGES order
    table = json.loads((out / "mixtures.json").read_text())
    assert table["languages"] == languages and len(table["mixtures"]) == 16
    assert sum(table["prior"].values()) == pytest.approx(1.0)
    rows = [json.loads(line) for line in _lines(out / "results.jsonl")]
    assert [r["id"] for r in rows] == list(range(16))
    assert all(list(r["losses"]) == languages and all(np.isfinite(list(r["losses"].values()))) for r in rows)
    fit = json.loads((out / "fit.json").read_text())
    assert set(fit["targets"]) == {"objective"} | {f"loss/{lang}" for lang in languages}
    assert (out / "regmix.png").stat().st_size > 10_000 and (out / "regressor.txt").is_file()
    rates = json.loads((out / "rates.json").read_text())
    assert list(rates) == languages and sum(rates.values()) == pytest.approx(1.0)
    tokens = json.loads((out / "tokens.json").read_text())
    assert tokens == pytest.approx({k: v * 9216 for k, v in rates.items()})
    search = json.loads((out / "search.json").read_text())  # within 4 epochs of each language's training tokens
    assert search["cap"]["max_epochs"] == 4 and search["cap"]["available_tokens"] == table["train_tokens"]
    assert all(tokens[k] <= 4 * table["train_tokens"][k] * (1 + 1e-12) for k in languages)
    assert not (out / "proxies" / "program").exists()  # the finished program's checkpoints are gone
    capsys.readouterr()

    # the rates file feeds the stage's mixture: inspect-data's target is it, and the loader realises it
    assert main(["inspect-data", "--config", "demo_stage1", "--batches", "60", "--seq-len", "128",
                 f"mixture.rates_file={out / 'rates.json'}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target"] == pytest.approx({k: v for k, v in rates.items() if v > 0}, abs=1e-6)
    assert all(abs(report["realised"].get(k, 0.0) - v) <= 0.02 for k, v in rates.items())

    # a rerun finds everything done
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["regmix", "--config", "demo", "--output-dir", str(out), *SMALL]) == 0
    assert capsys.readouterr().out.count("skipped") == 4
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    # a bigger search trains only the new mixtures and refits
    assert main(["regmix", "--config", "demo", "--output-dir", str(out), *SMALL, "sample.num_mixtures=24"]) == 0
    grown = json.loads((out / "mixtures.json").read_text())
    assert grown["mixtures"][:16] == table["mixtures"] and len(grown["mixtures"]) == 24
    assert _lines(out / "results.jsonl")[:16] == [json.dumps(r) for r in rows]
    assert len(_lines(out / "results.jsonl")) == 24
    assert json.loads((out / "fit.json").read_text())["mixtures"] == 24

    # proxies trained otherwise cannot join this search
    assert main(["regmix", "--config", "demo", "--output-dir", str(out), *SMALL, "proxy.steps=5"]) == 2
    assert "another proxy.steps" in capsys.readouterr().err
