"""Multi-process jobs for tests: several local processes of one `jax.distributed` job on CPU devices (gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cpu_env(devices: int, **extra: str) -> dict[str, str]:
    """The environment of a process with `devices` fake CPU devices."""
    return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
            **extra}


def train_cmd(out: Path, args: list[str], config: str = "demo_pretrain") -> list[str]:
    """`sailor2-jax train` as a subprocess command line."""
    return [sys.executable, "-m", "sailor2_jax.cli", "train", "--config", config, "--output-dir", str(out),
            *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_envs(processes: int, devices: int) -> list[dict[str, str]]:
    """Environments of the processes of one job, described as `sailor2_jax.train.multihost.initialize` reads it."""
    coordinator = f"127.0.0.1:{free_port()}"
    return [cpu_env(devices, SAILOR2_COORDINATOR=coordinator, SAILOR2_NUM_PROCESSES=str(processes),
                    SAILOR2_PROCESS_ID=str(i)) for i in range(processes)]


def run_processes(cmds: list[list[str]], envs: list[dict[str, str]], timeout: float) -> list[str]:
    """Run the processes of one job to the end; their stderr. A process that fails or outlives `timeout` fails the
    test (and every process is killed, so no orphan keeps a port or a CPU)."""
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for cmd, env in zip(cmds, envs)]
    deadline, outs = time.monotonic() + timeout, []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic())))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        errs = "".join(f"\n--- process {i}:\n{p.communicate()[1][-2000:]}" for i, p in enumerate(procs))
        pytest.fail(f"{cmds[0][1:4]}...: still running after {timeout} s (a hung collective?){errs}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{err[-3000:]}"
    return [err for _, err in outs]
