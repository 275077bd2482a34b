"""The demo wing's shape: every stage has the one signature, the README lists the stages in the order they run, and
the runner accounts for disk: it records each stage's and refuses a disk without room before the first stage."""

import inspect
import io
import json
import re
import shutil
import types
from pathlib import Path

import pytest
from rich.console import Console

from sailor2_jax.demo.run import DISK_NEEDED, STAGES, DemoFailed, name_of, run_demo

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_stage_has_a_title_and_runs_from_a_context():
    for stage in STAGES:
        assert isinstance(stage.TITLE, str) and stage.TITLE, name_of(stage)
        assert list(inspect.signature(stage.run).parameters) == ["ctx"], name_of(stage)


def test_readme_lists_the_stages_in_the_order_they_run():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("`make demo` (that is,"):text.index("## Layout")]
    listed = re.findall(r"^\d+\. `(\w+)` — ", section, flags=re.M)
    assert listed == [name_of(s) for s in STAGES], "README's demo stage list is out of date with demo/run.py STAGES"


def _stage(name, write_bytes):
    """A stage module that writes a file of `write_bytes` bytes under OUT/NAME (sparse: gibibytes cost no disk) and
    has one passing check."""
    from sailor2_jax.demo.stage import StageResult

    stage = types.ModuleType(f"sailor2_jax.demo.{name}")
    stage.TITLE = name

    def run(ctx):
        (ctx.out / name).mkdir()
        with open(ctx.out / name / "blob", "wb") as f:
            f.truncate(write_bytes)
        return StageResult(summary={}, checks={"wrote": True})
    stage.run = run
    return stage


def test_the_summary_records_each_stages_disk_use(tmp_path):
    summary = run_demo(tmp_path, (_stage("one", 3 << 29), _stage("two", 1 << 29)), Console(file=io.StringIO()))
    assert summary["stages"]["one"]["disk_gib"] == 1.5
    assert summary["stages"]["two"]["disk_gib"] == 2.0
    assert json.loads((tmp_path / "summary.json").read_text())["stages"]["two"]["checks"] == {"wrote": True}


def test_a_disk_without_room_for_the_demo_is_refused_before_any_stage(tmp_path, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=DISK_NEEDED - (5 << 20)))
    with pytest.raises(DemoFailed, match=r"GiB free on its disk .* the demo writes about 2\.5 GiB there"):
        run_demo(tmp_path / "fresh", (_stage("one", 1),), Console(file=io.StringIO()))
    assert not (tmp_path / "fresh" / "one").exists()
    # an earlier run's files are overwritten by the rerun, so they count as room
    (tmp_path / "rerun").mkdir()
    (tmp_path / "rerun" / "old").write_bytes(b"x" * (6 << 20))
    run_demo(tmp_path / "rerun", (_stage("one", 1),), Console(file=io.StringIO()))
