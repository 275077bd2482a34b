"""The demo wing's shape: every stage has the one signature, and the README lists the stages in the order they run."""

import inspect
import re
from pathlib import Path

from sailor2_jax.demo.run import STAGES, name_of

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
