"""Installed, not only checked out: the wheel carries the configs and the embedded data, and `sailor2-jax train`
runs from it in a fresh environment, from a directory that is not the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tomllib
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
    # top-level configs/ and data/ of the checkout, shipped inside the package: every file of theirs
    shipped = {f"sailor2_jax/configs/{p.relative_to(ROOT / 'configs')}" for p in (ROOT / "configs").rglob("*.yaml")}
    shipped |= {f"sailor2_jax/data_files/{p.relative_to(ROOT / 'data')}" for p in (ROOT / "data").rglob("*")
                if p.is_file() and p.suffix in (".jsonl", ".jinja", ".md")}
    assert len(shipped) > 60 and "sailor2_jax/data_files/udhr/th.jsonl" in shipped
    assert sorted(shipped - set(names)) == []

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


def test_every_code_package_is_listed_in_pyproject():
    """pyproject.toml lists the packages explicitly (it maps configs/ and data/ into the package, which setuptools'
    discovery cannot combine with): a new subpackage missing from that list would be left out of the wheel."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sailor2_jax").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == {"sailor2_jax.configs", "sailor2_jax.data_files"}
