"""`nutq normalize`: the subcommand as the lead will wire it into nutq.cli."""

import argparse
import json

import pytest

from nutq.text import cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nutq")
    cli.add_parser(p.add_subparsers(dest="command"))
    return p


def test_prints_spoken_text(capsys):
    args = parser().parse_args(["normalize", "لدي 3 كتب؟"])
    assert args.func is cli.run
    assert args.func(args) == 0
    assert capsys.readouterr().out == "لدي ثلاثة كتب?\n"


def test_json_output(capsys):
    args = parser().parse_args(["normalize", "5%", "--json", "--lang", "ar"])
    assert cli.run(args) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["text"] == "خمسة بالمئة" and d["original"] == "5%" and len(d["char_map"]) == len(d["text"])


def test_vocab_option(capsys, vocab_path):
    args = parser().parse_args(["normalize", "حرف 中", "--vocab", str(vocab_path)])
    assert cli.run(args) == 0
    assert capsys.readouterr().out == "حرف\n"


def test_diacritize_without_backend_fails_cleanly(capsys, monkeypatch):
    from nutq.text import diacritize

    def unavailable(_model):
        raise diacritize.DiacritizerUnavailable("text2tashkeel missing")

    monkeypatch.setattr("nutq.text.frontend.load_diacritizer", unavailable)
    args = parser().parse_args(["normalize", "كتب", "--diacritize"])
    assert cli.run(args) == 2
    assert "text2tashkeel" in capsys.readouterr().err


def test_unknown_language_is_rejected_by_the_parser():
    with pytest.raises(SystemExit):
        parser().parse_args(["normalize", "x", "--lang", "xx"])
