"""Multi-host: two local processes x 4 CPU devices (jax.distributed + gloo) reproduce one process x 8 devices."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--steps", "4", "data.source=synthetic", "model.vocab_size=256", "model.num_layers=2", "data.batch_size=8", "data.seq_len=32",
        "checkpoint.every=2", "log.eval_every=0", "log.progress=false", "log.tensorboard=false"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sailor2_jax.cli", "train", "--config", str(ROOT / "configs/train/demo_pretrain.yaml"),
            "--output-dir", str(out), *extra, *ARGS]


def _env(devices: int) -> dict[str, str]:
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_reproduce_one_process(tmp_path):
    one = subprocess.run(_cmd(tmp_path / "one"), cwd=ROOT, env=_env(8), capture_output=True, text=True, timeout=300, check=False)
    assert one.returncode == 0, one.stderr[-3000:]

    port = _free_port()
    procs = [subprocess.Popen(_cmd(tmp_path / "two", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                   "--process-id", str(i)), cwd=ROOT, env=_env(4), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    want, got = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(got) == len(want) == 4
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # both processes wrote their own data-iterator state into the (shared) checkpoint
    data_dir = tmp_path / "two" / "checkpoints" / "4" / "data"
    assert sorted(p.name for p in data_dir.glob("process_*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]
