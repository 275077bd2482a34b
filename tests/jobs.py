"""Multi-process jobs for tests: several local processes of one `jax.distributed` job on CPU devices (gloo)."""

from __future__ import annotations

import itertools
import json
import os
import signal
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


def cli_cmd(command: str, *args: str) -> list[str]:
    """`sailor2-jax COMMAND ARGS` as a subprocess command line (this checkout's package)."""
    return [sys.executable, "-m", "sailor2_jax.cli", command, *args]


def train_cmd(out: Path, args: list[str], config: str = "demo_pretrain") -> list[str]:
    """`sailor2-jax train` as a subprocess command line."""
    return cli_cmd("train", "--config", config, "--output-dir", str(out), *args)


_PORTS = itertools.count()


def free_port() -> int:
    """A coordinator port no other test can take: each pytest worker draws from its own block of 1,000 ports
    below the kernel's ephemeral range (where the OS hands out ports, e.g. to `bind(0)` and to gloo's
    connections), never the same one twice in a session, and checks that it is free. (Asking the OS for a free port
    and releasing it races with every other socket opened before the coordinator binds it.)"""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    block = 20000 + 1000 * (worker % 12)
    for _ in range(1000):
        port = block + next(_PORTS) % 1000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {block}..{block + 999}")


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


def logged_steps(out: Path) -> dict[int, dict]:
    """The lines of `out/metrics.jsonl` that log a training step, by step (complete lines only: a run may be writing
    the last one). A step logged twice fails the test: a resume must drop what it redoes."""
    path = out / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    rows = {}
    for line in text[:text.rfind("\n") + 1].splitlines():
        row = json.loads(line)
        if "loss" in row:
            assert row["step"] not in rows, f"step {row['step']} logged twice"
            rows[row["step"]] = row
    return rows


def finished_checkpoints(out: Path) -> list[int]:
    """The steps of `out/checkpoints` that are finished (orbax renames a step's directory to its number last)."""
    root = out / "checkpoints"
    return sorted(int(p.name) for p in root.glob("*") if p.name.isdigit()) if root.is_dir() else []


def train_until_killed(cmd: list[str], out: Path, ready, timeout: float) -> tuple[int, dict[int, dict]]:
    """Start a training run and SIGKILL it as soon as `ready(finished_checkpoints, logged_steps)` holds; returns the
    checkpoint a rerun resumes from and the steps logged before the kill. The run is frozen (SIGSTOP) while `ready`
    is confirmed, so what it saw is what the kill leaves: no checkpoint or line can land in between."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cpu_env(8), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if ready(finished_checkpoints(out), logged_steps(out)):
                proc.send_signal(signal.SIGSTOP)
                ckpts, rows = finished_checkpoints(out), logged_steps(out)
                if ready(ckpts, rows):
                    proc.kill()
                    proc.wait()
                    return ckpts[-1], rows
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        err = proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""
        pytest.fail(f"{cmd[3:5]}: never ready to be killed (exit {proc.poll()}, after {timeout} s at most)\n{err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def resume(cmd: list[str], out: Path, killed_at: int, before: dict[int, dict], keys: tuple[str, ...] = ("loss",)
           ) -> tuple[dict[int, dict], str]:
    """Rerun a killed training run to its end; it must resume from `killed_at` and log, bitwise, what the killed run
    logged for the steps after it (the uninterrupted run's values: at least two steps, so the optimiser state and
    the learning-rate schedule are checked as well as the weights and the data position); the steps up to the
    checkpoint must be kept as they were. Returns every step logged and the rerun's standard output."""
    redone = sorted(s for s in before if s > killed_at)
    assert len(redone) >= 2, f"killed at step {max(before)}, {len(redone)} step(s) after checkpoint {killed_at}"
    rerun = subprocess.run(cmd, cwd=ROOT, env=cpu_env(8), capture_output=True, text=True, timeout=600, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from step {killed_at}" in rerun.stdout, rerun.stdout[-2000:]
    after = logged_steps(out)
    for s in sorted(before):  # JSON floats round-trip exactly: equal text is equal bits
        assert {k: after[s][k] for k in keys} == {k: before[s][k] for k in keys}, (s, after[s], before[s])
    return after, rerun.stdout
