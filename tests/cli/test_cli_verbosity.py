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


def test_exports_input_facts_are_a_log_line_that_quiet_hides(tmp_path, capsys):
    for quiet in ([], ["-q"]):
        out = tmp_path / f"q{len(quiet)}" / "m.pt"
        assert cli.main(["export", "--format", "torchscript", "--out", str(out), *quiet]) == 0
        captured = capsys.readouterr()
        assert captured.out.splitlines()[0] == str(out)  # the files written: results, on stdout
        fact = "shiwu: input: float32 NCHW (batch, 3, 224, 224), RGB; resize short side to"
        assert (fact in captured.err) == (not quiet), captured.err


def test_a_commands_own_quiet_still_quiets_its_progress_and_the_log():
    # `shiwu batch -q` existed before (no progress bar): it keeps that meaning
    args = build_parser().parse_args(["batch", "-q", "photos", "--out", "x.jsonl"])
    assert args.quiet is True
    assert cli.verbosity(args) == cli.logs.QUIET
    args = build_parser().parse_args(["--quiet", "batch", "photos", "--out", "x.jsonl"])
    assert cli.verbosity(args) == cli.logs.QUIET


# the commands with a --quiet of their own (no progress bar), and arguments each parses with
COMMANDS_WITH_A_BAR = {"batch": ["photos", "--out", "x.jsonl"], "index": ["photos", "--out", "idx"],
                       "dedupe": ["photos"], "eval": ["photos"], "bench": [], "tune": []}


@pytest.mark.parametrize("command", COMMANDS_WITH_A_BAR)
@pytest.mark.parametrize("before", [True, False])
def test_quiet_before_or_after_the_command_hides_its_progress_bar(command, before):
    # `shiwu -q batch` quieted the log but kept the bar: the command's own --quiet default
    # (False) overwrote what was parsed before the command's name
    rest = COMMANDS_WITH_A_BAR[command]
    argv = ["-q", command, *rest] if before else [command, *rest, "-q"]
    args = cli.parse_args(build_parser(), argv)
    assert args.quiet is True and cli.verbosity(args) == cli.logs.QUIET
    assert cli.parse_args(build_parser(), [command, *rest]).quiet is False


@pytest.mark.parametrize("command", ["batch", "index", "eval"])
def test_no_progress_bar_with_quiet_before_the_command(command, tmp_path):
    """As a user runs it: the bar (tqdm's `shiwu batch: 100%|…`) is on stderr without -q, and
    gone with -q before the command's name as with -q after it."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from support.photos import DATA

    photos = tmp_path / "photos"
    for label, photo in (("espresso", "coffee.jpg"), ("tabby_cat", "chelsea.jpg")):
        (photos / label).mkdir(parents=True)
        shutil.copy(DATA / photo, photos / label / photo)
    target = {"batch": ["-r", "--out", tmp_path / "rows.jsonl", "--workers", "0"],
              "index": ["-r", "--out", tmp_path / "idx", "--workers", "0"], "eval": []}[command]

    def run(*quiet):
        for made in (tmp_path / "rows.jsonl", tmp_path / "idx"):
            shutil.rmtree(made, ignore_errors=True) if made.is_dir() else made.unlink(missing_ok=True)
        done = subprocess.run([str(Path(sys.executable).parent / "shiwu"), *quiet, command, str(photos),
                               *map(str, target), "--backend", "torch", "--threads", "1"],
                              capture_output=True, text=True, encoding="utf-8", timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert f"shiwu {command}:" in run()  # the bar's description
    assert f"shiwu {command}:" not in run("-q")


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
