"""The datatrove commands' configs (clean, translate, quality) load as every `config.Config` does: a YAML file (path or
packaged name), dotted `key=value` overrides and the command's flags, merged and validated in one pass, errors naming
the field and where its value came from. The runs themselves are replaced by a stub that records the config."""

import pytest

import sailor2_jax.config
from sailor2_jax.cli import main


@pytest.fixture
def captured(monkeypatch):
    """Replace the three runners by stubs recording their config; count the YAML files read."""
    seen = {"reads": 0}
    read_yaml = sailor2_jax.config.read_yaml

    def counting(path):
        seen["reads"] += 1
        return read_yaml(path)

    monkeypatch.setattr(sailor2_jax.config, "read_yaml", counting)

    def stub(name):
        def run(inputs, out, config):
            seen[name] = config
            return {"submitted": True, "logs": str(out)}
        return run

    import sailor2_jax.data.clean as clean
    import sailor2_jax.data.quality as quality
    import sailor2_jax.data.translate as translate

    monkeypatch.setattr(clean, "run_clean", stub("clean"))
    monkeypatch.setattr(translate, "run_translate", stub("translate"))
    monkeypatch.setattr(quality, "run_select", stub("select"))
    return seen


def test_clean_file_overrides_and_flags_in_one_pass(captured, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("executor: {tasks: 1, workers: 2}\nminhash: {ngram: 4}\nlanguages: {id: {words_min: 5}}\n")
    rc = main(["clean", "--input", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--config", str(cfg),
               "--language", "fil", "--tasks", "3", "minhash.bands=20", "executor.tasks=2", "languages.id.lid_min=0.6"])
    assert rc == 0
    c = captured["clean"]
    assert captured["reads"] == 1  # the file is read once, flags and overrides applied on top
    assert (c.executor.tasks, c.executor.workers) == (3, 2)  # the flag after the override; the file's workers
    assert (c.minhash.ngram, c.minhash.bands) == (4, 20)
    assert c.language == "tl"  # canonical code of the flag's value
    assert (c.params("id").words_min, c.params("id").lid_min) == (5, 0.6)


def test_clean_packaged_config_by_name(captured, tmp_path):
    assert main(["clean", "--input", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--config", "ray"]) == 0
    assert (captured["clean"].executor.kind, captured["clean"].executor.tasks) == ("ray", 64)


@pytest.mark.parametrize("argv, message", [
    (["executor.tasks=0"], "invalid config: executor.tasks: Input should be greater than 0 (override "
                           "'executor.tasks=0')"),
    (["minhash.bands=30"], "minhash: bands × rows = 300 exceeds num_perm = 256"),
    (["languages.th.words_min=-1"], "languages.th: words_min: Input should be greater than or equal to 0"),
    (["lid=maybe"], "lid: Input should be a valid boolean"),
    (["no_such_key=1"], "no_such_key: Extra inputs are not permitted (override 'no_such_key=1')"),
])
def test_clean_bad_override_named(captured, tmp_path, capsys, argv, message):
    rc = main(["clean", "--input", str(tmp_path), "--output-dir", str(tmp_path / "o"), *argv])
    assert rc == 2 and message in capsys.readouterr().err
    assert "clean" not in captured


def test_translate_flags_and_overrides(captured, tmp_path, capsys):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: /elsewhere\nbatch_size: 8\nexecutor: {kind: slurm}\n")
    rc = main(["translate", "--model", str(tmp_path / "nllb"), "--input", str(tmp_path), "--output-dir",
               str(tmp_path / "o"), "--target", "th, fil,th", "--fields", "prompt,chosen", "--config", str(cfg),
               "--workers", "2", "max_segment_tokens=160", "executor.slurm.partition=gpu"])
    assert rc == 0
    t = captured["translate"]
    assert captured["reads"] == 1
    assert (str(t.model), t.targets, t.fields) == (str(tmp_path / "nllb"), ["th", "tl"], ["prompt", "chosen"])
    assert (t.batch_size, t.max_segment_tokens, t.executor.kind, t.executor.workers, t.executor.slurm.partition) == \
        (8, 160, "slurm", 2, "gpu")
    rc = main(["translate", "--model", "m", "--input", str(tmp_path), "--output-dir", str(tmp_path / "o"), "--target",
               "th", "beam_size=0"])
    assert rc == 2 and "beam_size: Input should be greater than 0 (override 'beam_size=0')" in \
        capsys.readouterr().err


def test_quality_select_flags_config_and_overrides(captured, tmp_path):
    cfg = tmp_path / "q.yaml"
    cfg.write_text("compression: none\nexecutor: {workers: 4}\n")
    rc = main(["quality", "select", "--model", "a.bin", "b.bin", "--input", str(tmp_path), "--output-dir",
               str(tmp_path / "o"), "--keep", "0.15", "--language", "zsm", "--config", str(cfg), "--executor", "ray",
               "--tasks", "8", "executor.ray.cpus_per_task=2"])
    assert rc == 0
    s = captured["select"]
    assert ([str(m) for m in s.models], s.keep, s.language, s.compression) == (["a.bin", "b.bin"], 0.15, "ms", "none")
    assert (s.executor.kind, s.executor.tasks, s.executor.workers, s.executor.ray.cpus_per_task) == ("ray", 8, 4, 2)


def test_quality_train_settings_from_flags(monkeypatch, tmp_path, capsys):
    import sailor2_jax.data.quality as quality
    from sailor2_jax.data.quality import TrainSettings

    seen = {}

    def fake_train(positive, negative, language, out, settings):
        seen["settings"] = settings
        return {"language": language, "examples": {}, "held_out_metrics": {}}

    monkeypatch.setattr(quality, "train", fake_train)
    rc = main(["quality", "train", "--language", "vi", "--positive", "p", "--negative", "n", "--output", "m.bin",
               "--dim", "32", "--held-out", "0.2"])
    assert rc == 0
    assert seen["settings"] == TrainSettings(dim=32, held_out=0.2)
    rc = main(["quality", "train", "--language", "vi", "--positive", "p", "--negative", "n", "--output", "m.bin",
               "--held-out", "1.5"])
    assert rc == 2 and "held_out: Input should be less than 1" in capsys.readouterr().err
