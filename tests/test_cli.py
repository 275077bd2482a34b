"""The one entry point: every command the design names is there, with help, and user errors end in one line."""

import argparse
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from sailor2_jax.cli import build_parser, main

COMMANDS = {"cache", "chat", "clean", "compile", "demo", "eval", "eval-import", "eval-report", "expand", "export",
            "filter-ppl", "generate", "inspect-data", "judge", "onpolicy", "plan", "quality", "regmix", "score",
            "select-sft", "serve", "train", "translate"}


def test_every_command_is_registered_with_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == COMMANDS
    for name in COMMANDS:
        with pytest.raises(SystemExit) as e:
            parser.parse_args([name, "--help"])
        assert e.value.code == 0
        assert "usage: sailor2-jax " + name in capsys.readouterr().out


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    code = main(["expand", "--base", str(tmp_path / "missing"), "--layers", "8", "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("sailor2-jax expand: error:") and "missing" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, old, new", [
    (["expand", "--base", "b", "--layers", "8", "--out", "x"], "--out", "--output-dir"),
    (["clean", "--input", "i", "--output", "x"], "--output", "--output-dir"),
    (["onpolicy", "--policy", "p", "--reward-model", "r", "--prompts", "q", "--out", "x"], "--out", "--output"),
    (["select-sft", "--model", "m", "--input", "i", "--output", "x"], "--output", "--output-dir"),
])
def test_an_old_output_flag_is_refused_naming_the_new_one(argv, old, new, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    assert e.value.code == 2
    assert f"{old} is now {new}" in capsys.readouterr().err


def test_output_flags_have_one_spelling_per_kind():
    """Every visible flag that names an output is `--output` (a file) or `--output-dir` (a directory)."""
    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)
    flags = {flag for p in parsers(build_parser()) for a in p._actions if a.help != argparse.SUPPRESS
             for flag in a.option_strings if flag.startswith("--out")}
    assert flags == {"--output", "--output-dir"}


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None or bool(glob.glob("/dev/accel*")),
                    reason="needs the TPU compiler installed on a machine without a TPU")
def test_an_installed_tpu_compiler_without_a_tpu_starts_jax_quietly():
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    code = "from sailor2_jax import cli; cli._skip_absent_tpu(); import jax; print(jax.devices()[0].platform)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("cpu", "gpu")
    assert "TPU" not in done.stderr, done.stderr  # libtpu's runtime was never started


def test_an_interruption_is_one_line_even_when_it_leaves_a_half_built_object():
    """Ctrl-C inside a constructor (e.g. a tqdm bar's) leaves an object whose destructor fails when it is collected
    at exit; the report stays our one line, with no traceback after it."""
    code = """
import sys
import sailor2_jax.commands.inspect_data as command
from sailor2_jax.cli import main

class HalfBuilt:
    def __init__(self):
        raise KeyboardInterrupt          # the signal lands before the object is complete
    def __del__(self):
        self.closed                      # AttributeError: what tqdm.__del__ meets

def run(args):
    global keep
    try:
        HalfBuilt()
    except KeyboardInterrupt as e:
        keep = e                         # the traceback keeps the half-built object alive until exit
        raise
command.run = run
sys.exit(main(["inspect-data", "--config", "demo_stage1"]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == ["sailor2-jax inspect-data: interrupted (Ctrl-C); partial output removed"]


def test_an_interruption_during_a_progress_bar_reports_on_a_line_of_its_own():
    """Ctrl-C while a tqdm bar is drawn and not yet inside the loop that closes it (CI saw this once from `expand`):
    the frame holding the bar lives on in the traceback until the handler ends, so without closing open bars first
    the report continued the half-drawn bar's line."""
    code = """
import sys
from tqdm import tqdm
import sailor2_jax.commands.inspect_data as command
from sailor2_jax.cli import main

def run(args):
    bar = tqdm(total=2, desc="writing out", leave=False, file=sys.stderr)  # drawn; the traceback keeps it alive
    raise KeyboardInterrupt              # before any `with`/loop that would close it
command.run = run
sys.exit(main(["inspect-data", "--config", "demo_stage1"]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "writing out" in done.stderr  # the bar was drawn
    assert done.stderr.splitlines()[-1] == "sailor2-jax inspect-data: interrupted (Ctrl-C); partial output removed"
