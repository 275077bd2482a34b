"""The one entry point: every command the design names is there, with help, and user errors end in one line."""

import pytest

from sailor2_jax.cli import build_parser, main

COMMANDS = {"cache", "chat", "clean", "compile", "demo", "expand", "export", "filter-ppl", "generate", "inspect-data",
            "onpolicy", "plan", "quality", "regmix", "score", "select-sft", "train", "translate"}


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
    code = main(["expand", "--base", str(tmp_path / "missing"), "--layers", "8", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("sailor2-jax expand: error:") and "missing" in err and "Traceback" not in err
