"""Every multi-value option takes space-separated values, commas, or both (one shared Action)."""

from __future__ import annotations

import argparse

import pytest

from bench.cli import build_parser
from bench.cli_args import ListAction


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _all_parsers(parser, prefix=()):
    for name, sub in _subparsers(parser):
        yield (*prefix, name), sub
        yield from _all_parsers(sub, (*prefix, name))


def test_no_multi_value_option_bypasses_the_shared_action():
    """A plain nargs='+' (or '*') option would reject 'a,b': every one goes through ListAction."""
    offenders = [
        (" ".join(path), a.option_strings[0])
        for path, sub in _all_parsers(build_parser())
        for a in sub._actions
        if a.option_strings and a.nargs in ("+", "*") and not isinstance(a, ListAction)
    ]
    assert not offenders, offenders


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--methods", "telea", "ns", "--resolutions", "1024", "2048"],
        ["run", "--methods", "telea,ns", "--resolutions", "1024,2048"],
        ["run", "--methods", "telea,", "ns", "--resolutions", "1024,", "2048"],
    ],
)
def test_run_spellings_agree(argv):
    args = build_parser().parse_args(argv)
    assert args.methods == ["telea", "ns"] and args.resolutions == [1024, 2048]


@pytest.mark.parametrize(
    "argv, dest, expected",
    [
        (["prepare", "--images", "x", "--out", "y", "--resolutions", "512,1024"], "resolutions", [512, 1024]),
        (["table", "R", "--metrics", "l1", "psnr,ssim"], "metrics", ["l1", "psnr", "ssim"]),
        (["survey", "create", "--run", "R", "--resolution", "1024", "--out", "S",
          "--methods", "telea", "ns"], "methods", ["telea", "ns"]),
        (["survey", "create", "--run", "R", "--resolution", "1024", "--out", "S",
          "--images", "a,b", "c"], "images", ["a", "b", "c"]),
        (["train", "refine", "--images", "x", "--steps", "1", "--widths", "8,8", "8", "8", "8"],
         "widths", [8, 8, 8, 8, 8]),
    ],
)
def test_other_commands_take_both_spellings(argv, dest, expected):
    assert getattr(build_parser().parse_args(argv), dest) == expected


def test_bad_item_is_one_clear_line(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["run", "--resolutions", "1024,abc"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--resolutions" in err and "'abc'" in err and "whole number" in err


def test_only_commas_is_refused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--methods", ","])
    assert "expected at least one value" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle, prog",
    [
        (["run", "--metric-region", "bad"], "invalid choice: 'bad'", "hrbench run"),
        (["table", "R", "--format", "html"], "invalid choice: 'html'", "hrbench table"),
        (["inpaint", "photo.png"], "required: mask, -o/--output", "hrbench inpaint"),
        (["survey", "create", "--run", "R"], "required: --resolution, --out", "hrbench survey create"),
        (["no-such-command"], "invalid choice: 'no-such-command'", "hrbench"),
    ],
)
def test_usage_mistakes_are_one_hrbench_error_line(argv, needle, prog, capsys):
    """As every other user mistake: one `hrbench: error:` line, not argparse's usage block."""
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hrbench: error: ") and needle in err[0], err
    assert err[0].endswith(f"(see `{prog} --help`)")
