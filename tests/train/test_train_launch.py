"""launch_tpu.sh --dry-run prints the gcloud commands: create, sync, install, train on every worker, collect logs."""

import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _dry_run(*extra: str) -> list[list[str]]:
    out = subprocess.run(["bash", str(ROOT / "launch_tpu.sh"), "--dry-run", "--name", "sailor-test", "--zone",
                          "us-east5-a", "--accelerator", "v5p-64", "--runtime", "v2-alpha-tpuv5", "--project", "proj",
                          "--config", "configs/train/sailor2-1b_stage1.yaml", "--output-dir", "gs://bucket/run",
                          *extra], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    return [shlex.split(line) for line in out.splitlines() if line and not line.startswith("#")]


def test_dry_run_prints_the_gcloud_commands():
    cmds = _dry_run("--spot", "--", "steps=10", "data.seq_len=2048")
    gcloud = [c for c in cmds if c[0] == "gcloud"]
    assert gcloud[0] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "sailor-test", "--zone", "us-east5-a",
                         "--project", "proj", "--accelerator-type", "v5p-64", "--version", "v2-alpha-tpuv5", "--spot"]
    scp, unpack, install, train, collect = gcloud[1:6]
    assert scp[4] == "scp" and "--worker=all" in scp and scp[6] == "sailor-test:~/sailor2_jax.tar.gz"
    assert all(["--zone", "us-east5-a"] == c[c.index("--zone"):c.index("--zone") + 2] for c in gcloud)
    assert unpack[4] == "ssh" and "--worker=all" in unpack and "tar xzf" in unpack[-1]
    assert install[4] == "ssh" and "--worker=all" in install and "pip install -q -c requirements-lock.txt -e '.[tpu]'" \
        in install[-1]  # the locked versions (TPU JAX through the project's tpu extra)
    assert train[4] == "ssh" and "--worker=all" in train
    remote = train[-1]
    assert ("python3 -m sailor2_jax.cli train --config configs/train/sailor2-1b_stage1.yaml --output-dir "
            "gs://bucket/run steps=10 data.seq_len=2048") in remote and "tee ~/train.log" in remote
    assert collect[4] == "scp" and collect[5] == "sailor-test:~/train.log" and collect[6].endswith("worker-0.log")
    assert "--worker=0" in collect
    tar = next(c for c in cmds if c[0] == "tar")
    assert "--exclude" in tar and ".venv" in tar


def test_missing_flag_is_a_clear_error():
    out = subprocess.run(["bash", str(ROOT / "launch_tpu.sh"), "--dry-run", "--name", "x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and "--zone is required" in out.stderr
