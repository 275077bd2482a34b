"""Multi-host: two local processes x 4 CPU devices (jax.distributed + gloo) reproduce one process x 8 devices.

One two-process training run serves both checks: its losses equal those of one process, and exporting its
checkpoint with two processes (each holding only its half of every matrix) gives the same HF directory as one
process does. Run as a script (`... export-worker CKPT OUT TOKENIZER`), this file is one process of that export.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

# fp32 compute: one process and two are different programs (another partitioning, gloo's reductions), compared with a
# tolerance that holds on any machine; in bf16 they would differ at bf16 rounding
ARGS = ["--steps", "4", "data.source=synthetic", "model.vocab_size=256", "model.num_layers=2", "data.batch_size=8",
        "data.seq_len=32", "compute.dtype=float32", "optimizer.schedule.total_steps=20", "checkpoint.every=2", "log.eval_every=0", "log.progress=false",
        "log.tensorboard=false"]
SHARD_SIZE = "100KB"  # the tiny model's ~360 KB of weights as several shards plus an index
TIMEOUT_S = 300  # a hung collective fails the test instead of hanging CI


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_reproduce_one_process(tmp_path):
    """Training losses match; then the same run's checkpoint is exported by two processes (one run serves both)."""
    from jobs import cpu_env, free_port, run_processes, train_cmd  # tests/ (this file also runs as a worker script)

    run_processes([train_cmd(tmp_path / "one", ARGS)], [cpu_env(8)], TIMEOUT_S)
    port = free_port()  # the coordinator as flags here (the export below describes its job in the environment)
    run_processes([train_cmd(tmp_path / "two", ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                                "--process-id", str(i), *ARGS]) for i in range(2)],
                  [cpu_env(4)] * 2, TIMEOUT_S)
    want, got = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(got) == len(want) == 4
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # both processes wrote their own data-iterator state into the (shared) checkpoint
    data_dir = tmp_path / "two" / "checkpoints" / "4" / "data"
    assert sorted(p.name for p in data_dir.glob("process_*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]

    _check_two_process_export(tmp_path / "two", tmp_path)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    """JAX's preemption service: a SIGTERM that reaches only process 1 makes both processes save the same step
    (both processes' data-iterator states in one checkpoint), exit 0, and the job resumes from it."""
    import signal
    import subprocess
    import time

    from jobs import ROOT, job_envs, run_processes, train_cmd

    args = ["--steps", "400", *ARGS[2:], "checkpoint.every=1000"]
    envs = job_envs(2, 4)
    procs = [subprocess.Popen(train_cmd(tmp_path, args), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for env in envs]
    try:
        deadline = time.time() + TIMEOUT_S
        while time.time() < deadline and all(p.poll() is None for p in procs):
            if (tmp_path / "metrics.jsonl").exists() and (tmp_path / "metrics.jsonl").read_text().count("\n") >= 3:
                break
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    saved = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert len(saved) == 1 and 3 <= saved[0] < 400, saved
    assert sorted(p.name for p in (tmp_path / "checkpoints" / str(saved[0]) / "data").glob("process_*")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]
    assert f"preempted (SIGTERM) at step {saved[0]}" in outs[0][0]
    # the job resumes from that step on both processes
    resume = [*ARGS[2:], "--steps", str(saved[0] + 2)]
    errs = run_processes([train_cmd(tmp_path, resume)] * 2, job_envs(2, 4), TIMEOUT_S)
    assert len(_losses(tmp_path)) == saved[0] + 2, errs[0][-2000:]


# --- export ------------------------------------------------------------------------------------------------------

def _tokenizer_dir(tmp_path: Path) -> Path:
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text('{"stub": true}')
    (tok / "tokenizer_config.json").write_text("{}")
    return tok


def _assert_complete(out: Path) -> None:
    """An exported directory holds its config, tokenizer, index and every shard the index names."""
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "model.safetensors.index.json"} <= names, sorted(names)
    shards = set(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert len(shards) > 1 and shards <= names, (sorted(shards), sorted(names))


def _check_two_process_export(run_dir: Path, tmp_path: Path) -> None:
    import torch
    from flax import nnx
    from jobs import job_envs, run_processes
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from sailor2_jax.config import MeshConfig
    from sailor2_jax.model.hf import export_hf, import_hf
    from sailor2_jax.sharding import make_mesh
    from sailor2_jax.model.source import open_run

    tok = _tokenizer_dir(tmp_path)
    # the reference: this (pytest) process alone, 8 devices
    model, step = open_run(run_dir)
    assert step == 4
    one = export_hf(model, tmp_path / "export" / "one", tokenizer=tok, max_shard_size=SHARD_SIZE)

    # `sailor2-jax export` as two processes of one job (each process checks itself: see _export_worker)
    two = tmp_path / "export" / "two"
    cmd = [sys.executable, __file__, "export-worker", str(run_dir), str(two), str(tok)]
    run_processes([cmd, cmd], job_envs(2, 4), timeout=120)

    # written once, atomically: the same files as one process writes, no temporary or old directory left behind
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["one", "two"]
    _assert_complete(two)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    for f in sorted(one.iterdir()):
        if f.suffix == ".safetensors":
            with safe_open(str(one / f.name), "np") as a, safe_open(str(two / f.name), "np") as b:
                keys = list(a.keys())
                assert list(b.keys()) == keys, f.name
                for k in keys:
                    np.testing.assert_array_equal(b.get_tensor(k), a.get_tensor(k), err_msg=k, strict=True)
        assert (two / f.name).read_bytes() == (one / f.name).read_bytes(), f.name

    # the tensors are the checkpoint's parameters, bit for bit
    back = import_hf(two, make_mesh(MeshConfig()))
    want, got = nnx.to_flat_state(nnx.state(model, nnx.Param)), nnx.to_flat_state(nnx.state(back, nnx.Param))
    assert [p for p, _ in got] == [p for p, _ in want]
    for (path, w), (_, g) in zip(want, got):
        np.testing.assert_array_equal(np.asarray(g[...]), np.asarray(w[...]), err_msg=str(path), strict=True)

    # transformers loads it and computes the same logits as from the single-process export
    x = torch.from_numpy(np.random.default_rng(0).integers(0, model.cfg.vocab_size, (2, 16)))
    logits = []
    for d in (one, two):
        hf, info = AutoModelForCausalLM.from_pretrained(d, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
        with torch.no_grad():
            logits.append(hf.eval()(x).logits.numpy())
    assert np.isfinite(logits[1]).all()
    np.testing.assert_array_equal(logits[1], logits[0])


def _export_worker(ckpt: str, out: str, tokenizer: str) -> None:
    """One process of a two-process `sailor2-jax export`, with checks: the parameters are really split between
    the processes, only process 0 writes, the directory is complete on every process when the command returns, and
    a refused second export (the directory exists) fails on both processes instead of stranding one in a gather."""
    import jax
    from flax import nnx

    from sailor2_jax import cli
    from sailor2_jax.model import hf
    from sailor2_jax.model import source

    def only_process_0(fn):
        def writer(*args, **kwargs):
            assert jax.process_index() == 0, f"process {jax.process_index()} writes ({fn.__name__})"
            return fn(*args, **kwargs)
        return writer

    for name in ("atomic_dir", "write_hf_config", "write_shards", "copy_tokenizer"):
        setattr(hf, name, only_process_0(getattr(hf, name)))

    load = source.open_run

    def load_split(path, mesh=None, dtype=None, **kwargs):
        model, step = load(path, mesh, dtype, **kwargs)
        assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
        split = []
        for key, v in nnx.to_flat_state(nnx.state(model, nnx.Param)):
            a = v[...]
            if not a.sharding.is_fully_replicated:  # this process holds only part of it
                held = {str(s.index): s.data.size for s in a.addressable_shards}
                assert sum(held.values()) < a.size, (key, a.sharding)
                split.append(".".join(map(str, key)))
        assert {"embed", "layers.q", "layers.o", "layers.down"} <= set(split), split  # (norms are replicated)
        return model, step

    source.open_run = load_split

    argv = ["export", "--checkpoint", ckpt, "--output-dir", out, "--tokenizer", tokenizer, "--max-shard-size", SHARD_SIZE]
    assert cli.main(argv) == 0
    _assert_complete(Path(out))  # on process 1 too: export returns once process 0 has renamed the directory
    before = sorted((p.name, p.stat().st_mtime_ns) for p in Path(out).iterdir())
    assert cli.main(argv) == 2  # exists, no --overwrite: a user error on every process
    assert sorted((p.name, p.stat().st_mtime_ns) for p in Path(out).iterdir()) == before


if __name__ == "__main__":
    if sys.argv[1:2] == ["export-worker"]:
        _export_worker(*sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} export-worker CHECKPOINT OUT TOKENIZER")
