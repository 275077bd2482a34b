"""Mixture rates: the recipe tables as defaults, language and task keys, rates files, temperature, replay."""

from __future__ import annotations

import json

import pytest
from data_helpers import config, stage_config, write_config

from sailor2_jax.data import mixture
from sailor2_jax.data.config import load_data_config

STAGE1 = {"vi": 102, "id": 94, "th": 92, "en": 51, "zh": 50, "my": 23.5, "ms": 21, "tl": 10, "km": 6.5}
STAGE2 = {"vi": 10.9, "id": 12.8, "th": 13.9, "my": 2.8, "ms": 1.3, "tl": 2.2, "km": 0.9, "war": 0.02, "ilo": 0.05,
          "jv": 0.17, "lo": 0.33, "ceb": 0.30, "su": 0.09}


def test_real_stage1_config_has_the_recipe_table():
    tasks, shares = mixture.resolve(load_data_config("stage1"))
    langs = mixture.language_shares(tasks, shares)
    assert set(langs) == set(STAGE1)  # the 9 high-resource languages only
    for lang, tokens in STAGE1.items():
        assert langs[lang] == pytest.approx(tokens / 450)


def test_real_stage2_config_replays_stage1_and_adds_all_sea_languages():
    cfg = load_data_config("stage2")
    tasks, shares = mixture.resolve(cfg)
    own = 2.5 + sum(STAGE2.values())  # 48.26B: the table's rows without the replay
    replay = sum(s for n, s in shares.items() if n.startswith("web_"))
    assert replay == pytest.approx(0.2)  # the blog's 20 % (the table's 10B would give 10 / 58.3 = 17.2 %)
    assert shares["instruct_en"] == pytest.approx(0.8 * 2.5 / own)
    for lang, tokens in STAGE2.items():
        assert shares[f"hq_{lang}"] == pytest.approx(0.8 * tokens / own)
    assert shares["web_vi"] == pytest.approx(0.2 * 102 / 450)
    assert len(mixture.language_shares(tasks, shares)) == 15
    # the table's own 10B, given as tokens, is 17.2 %
    by_tokens = cfg.model_copy(update={"mixture": cfg.mixture.model_copy(
        update={"replay": cfg.mixture.replay.model_copy(update={"share": None, "tokens": 10.0})})})
    _, shares = mixture.resolve(by_tokens)
    assert sum(s for n, s in shares.items() if n.startswith("web_")) == pytest.approx(10 / (10 + own))


def test_language_rate_split_over_its_tasks_and_task_keys():
    d = stage_config({"a": "vi", "b": "vi", "c": "th"}, {"vi": 2, "c": 1})
    _, shares = mixture.resolve(config(d))
    assert shares == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_temperature_flattens():
    d = stage_config({"a": "vi", "c": "th"}, {"a": 9, "c": 1})
    d["mixture"]["temperature"] = 2.0
    _, shares = mixture.resolve(config(d))
    assert shares["a"] == pytest.approx(0.9 ** 0.5 / (0.9 ** 0.5 + 0.1 ** 0.5))


def test_temperature_applies_to_languages_not_tasks():
    """Splitting a language into tasks must not change its share: T reshapes language shares, and the tasks split
    their language's share in the proportions of their rates."""
    one = stage_config({"v": "vi", "t": "th", "i": "id"}, {"v": 51, "t": 30, "i": 19})
    split = stage_config({"v1": "vi", "v2": "vi", "v3": "vi", "t": "th", "i": "id"},
                         {"v1": 17, "v2": 17, "v3": 17, "t": 30, "i": 19})
    for t in (1.0, 2.0, 5.0):
        one["mixture"]["temperature"] = split["mixture"]["temperature"] = t
        tasks_a, a = mixture.resolve(config(one))
        tasks_b, b = mixture.resolve(config(split))
        langs_a, langs_b = mixture.language_shares(tasks_a, a), mixture.language_shares(tasks_b, b)
        assert langs_b == pytest.approx(langs_a)
        p = {"vi": 0.51, "th": 0.30, "id": 0.19}
        z = sum(v ** (1 / t) for v in p.values())
        assert langs_a == pytest.approx({k: v ** (1 / t) / z for k, v in p.items()})
        assert b["v1"] == pytest.approx(b["v2"]) and b["v1"] == pytest.approx(b["v3"])


def test_replay_as_share_or_tokens(tmp_path):
    s1 = write_config(tmp_path / "s1.yaml", stage_config({"a": "vi"}, {"a": 1}))
    d2 = stage_config({"b": "th", "c": "id"}, {"b": 3, "c": 1}, name="s2", replay={"config": str(s1), "share": 0.2})
    _, shares = mixture.resolve(config(d2))
    assert shares == pytest.approx({"a": 0.2, "b": 0.6, "c": 0.2})
    d2["mixture"]["replay"] = {"config": str(s1), "tokens": 1}
    _, shares = mixture.resolve(config(d2))
    assert shares == pytest.approx({"a": 0.2, "b": 0.6, "c": 0.2})
    for bad in ({"config": str(s1)}, {"config": str(s1), "share": 0.2, "tokens": 1}, {"config": str(s1), "share": 1}):
        d2["mixture"]["replay"] = bad
        with pytest.raises(ValueError, match="replay"):
            config(d2)


def test_rates_file_replaces_rates(tmp_path):
    (tmp_path / "rates.json").write_text(json.dumps({"a": 1, "th": 3}))
    d = stage_config({"a": "vi", "c": "th"}, {"a": 9, "c": 1})
    d["mixture"]["rates_file"] = str(tmp_path / "rates.json")
    _, shares = mixture.resolve(config(d))
    assert shares == pytest.approx({"a": 0.25, "c": 0.75})
    (tmp_path / "bad.yaml").write_text("a: -1\n")
    d["mixture"]["rates_file"] = str(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="bad.yaml"):
        mixture.resolve(config(d))


def test_unknown_keys_and_conflicting_replays_are_errors(tmp_path):
    with pytest.raises(ValueError, match="neither a task"):
        mixture.resolve(config(stage_config({"a": "vi"}, {"zz": 1})))
    with pytest.raises(ValueError, match="no task has it"):
        mixture.resolve(config(stage_config({"a": "vi"}, {"th": 1})))
    s1 = write_config(tmp_path / "s1.yaml", stage_config({"a": "vi"}, {"a": 1}))
    d2 = stage_config({"a": "th"}, {"a": 1}, name="s2", replay={"config": str(s1), "tokens": 1})
    with pytest.raises(ValueError, match="defined differently"):
        mixture.resolve(config(d2))


def test_config_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mixture: {name: m, rates: {a: 1}}\ntasks: [{name: A-B, language: xx, source: {type: csv}}]\n")
    with pytest.raises(ValueError) as e:
        load_data_config(bad)
    assert "bad.yaml" in str(e.value) and "tasks.0" in str(e.value)
