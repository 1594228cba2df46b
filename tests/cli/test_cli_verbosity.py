"""--quiet / --verbose on every command (issue 19): library modules log, the command line
decides what reaches stderr — `shiwu: message`, `shiwu: warning: message`."""

from __future__ import annotations

import logging

import pytest

from shiwu import cli
from shiwu.cli import build_parser


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")  # argparse has no public accessor
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_takes_quiet_and_verbose(command):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    flags = {flag for action in sub._actions for flag in action.option_strings}
    assert {"--quiet", "-q", "--verbose", "-v"} <= flags


def _log_both(capsys) -> str:
    capsys.readouterr()
    library = logging.getLogger("shiwu.recognizer")
    library.info("facts for the curious")
    library.warning("something to know")
    library.debug("internals")
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, shown, hidden", [
    (["models"], ["shiwu: facts for the curious", "shiwu: warning: something to know"], ["internals"]),
    (["--quiet", "models"], ["shiwu: warning: something to know"], ["facts", "internals"]),
    (["models", "-q"], ["shiwu: warning: something to know"], ["facts", "internals"]),
    (["-v", "models"], ["shiwu: facts for the curious", "shiwu: internals"], []),
    (["models", "--verbose"], ["shiwu: internals"], []),
])
def test_the_options_decide_what_a_library_log_shows(capsys, argv, shown, hidden):
    assert cli.main(argv) == 0
    err = _log_both(capsys)
    for text in shown:
        assert text in err
    for text in hidden:
        assert text not in err


def test_a_commands_own_quiet_still_quiets_its_progress_and_the_log():
    # `shiwu batch -q` existed before (no progress bar): it keeps that meaning
    args = build_parser().parse_args(["batch", "-q", "photos", "--out", "x.jsonl"])
    assert args.quiet is True
    assert cli.verbosity(args) == cli.logs.QUIET
    args = build_parser().parse_args(["--quiet", "batch", "photos", "--out", "x.jsonl"])
    assert cli.verbosity(args) == cli.logs.QUIET


def test_quiet_and_verbose_together_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["-q", "-v", "models"])
    assert exited.value.code == 2
    assert "contradict" in capsys.readouterr().err


def test_the_model_and_settings_modules_do_not_print():
    import ast
    from pathlib import Path

    import shiwu

    root = Path(shiwu.__file__).parent
    for name in ("config.py", "recognizer.py", "cache.py", "models/chinese_clip.py", "models/user_file.py",
                 "models/model_files.py", "models/embedding.py", "models/outputs.py"):
        tree = ast.parse((root / name).read_text())
        calls = [n.lineno for n in ast.walk(tree)
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert calls == [], f"{name} prints at lines {calls}"
