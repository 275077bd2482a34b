"""Installed, not only checked out: the wheel carries the configs and the embedded data, and `sailor2-jax train`
runs from it in a fresh environment, from a directory that is not the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from jobs import ROOT, cpu_env


@pytest.mark.slow
def test_the_wheel_installs_and_trains_from_anywhere(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("sailor2_jax-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for packaged in ("sailor2_jax/configs/train/demo_pretrain.yaml", "sailor2_jax/configs/model/sailor2-1b.yaml",
                     "sailor2_jax/configs/data/demo_stage1.yaml", "sailor2_jax/assets/udhr/th.jsonl",
                     "sailor2_jax/configs/eval/demo.yaml", "sailor2_jax/assets/eval/udhr_translation.jsonl"):
        assert packaged in names, packaged

    # a fresh venv: the wheel installed into it; its dependencies seen through a .pth line (installing them from the
    # registry would take gigabytes), which does not run the checkout's editable-install hook
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "-q", str(wheel)], check=True, capture_output=True, timeout=300)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import sailor2_jax; print(sailor2_jax.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True, env=cpu_env(1))
    assert where.stdout.strip().startswith(str(site)), where.stdout
    run = subprocess.run([str(venv / "bin" / "sailor2-jax"), "train", "--config", "demo_pretrain", "--steps", "2",
                          "--output-dir", "run", "optimizer.schedule.total_steps=20", "checkpoint.every=2", "log.eval_every=0",
                          "log.progress=false"],
                         cwd=elsewhere, capture_output=True, text=True, timeout=600, env=cpu_env(8))
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in (elsewhere / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)
    assert any(k.startswith("loss/") for k in rows[0])  # real text of the packaged mixture, per language
    assert not Path(ROOT / "run").exists()
