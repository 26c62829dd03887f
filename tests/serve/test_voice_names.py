"""Voice names on the stock-client endpoints: aliases, registered ids, vendors' stock names."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from nutq.engine.voice_cache import UnknownVoiceError
from nutq.serve.config import ServeConfig
from nutq.serve.voice_names import check_aliases, is_stock_name, parse_aliases, resolve_voice


class FakeVoices:
    def __init__(self, ids):
        self.ids = set(ids)

    def get(self, voice_id):
        if voice_id not in self.ids:
            raise UnknownVoiceError(f"unknown voice id {voice_id!r}")
        return voice_id


def ctx(voices=("default", "narrator", "ash"), **aliases):
    return SimpleNamespace(config=ServeConfig(voice_aliases=aliases), engine=SimpleNamespace(voices=FakeVoices(voices)))


def resolve(c, name, protocol="openai"):
    return asyncio.run(resolve_voice(c, name, protocol))


@pytest.mark.parametrize("name, protocol, expected", [
    ("alloy", "openai", "narrator"),  # an alias wins over the stock-name fallback...
    ("ash", "openai", "ash"),  # ...and a registered voice of that name over the fallback
    ("nova", "openai", "default"),
    ("narrator", "openai", "narrator"),
    (None, "openai", "default"),
    ("aura-2-thalia-en", "deepgram", "default"),
    ("alloy", "deepgram", "narrator"),  # aliases apply on both endpoints
])
def test_resolution_order(name, protocol, expected):
    assert resolve(ctx(alloy="narrator"), name, protocol) == expected


@pytest.mark.parametrize("name, protocol", [("nova", "deepgram"), ("aura-2-thalia-en", "openai"),
                                            ("nova", "native"), ("narator", "openai")])
def test_names_of_another_vendor_or_typos_are_unknown(name, protocol):
    with pytest.raises(UnknownVoiceError, match=f"unknown voice id '{name}'"):
        resolve(ctx(), name, protocol)


def test_alias_of_a_removed_voice_says_which_alias_broke():
    c = ctx(alloy="narrator")
    c.engine.voices.ids.discard("narrator")
    with pytest.raises(UnknownVoiceError, match="'alloy' is an alias of voice 'narrator', which no longer exists"):
        resolve(c, "alloy")


def test_stock_names_without_a_default_voice_are_a_404():
    with pytest.raises(UnknownVoiceError, match="'default'"):
        resolve(ctx(voices=("narrator",)), "alloy")


def test_stock_name_patterns():
    assert is_stock_name("shimmer", "openai") and is_stock_name("aura-asteria-en", "deepgram")
    assert not is_stock_name("aura-asteria", "deepgram") and not is_stock_name("shimmer", "deepgram")


def test_parse_aliases_from_the_command_line():
    assert parse_aliases(["alloy=narrator", " ash = guest ", "alloy=narrator"]) == {"alloy": "narrator", "ash": "guest"}
    for bad in (["alloy"], ["=narrator"], ["alloy="]):
        with pytest.raises(ValueError, match="NAME=VOICE"):
            parse_aliases(bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_aliases(["alloy=a", "alloy=b"])


def test_check_aliases_refuses_unknown_targets_and_bad_names():
    check_aliases({"alloy": "narrator"}, ["default", "narrator"])
    with pytest.raises(ValueError, match="no voice 'narator' \\(known: default, narrator\\)"):
        check_aliases({"alloy": "narator"}, ["default", "narrator"])
    with pytest.raises(ValueError, match="invalid voice id"):
        check_aliases({"al loy": "narrator"}, ["narrator"])


def test_config_refuses_aliases_that_are_not_a_dict_of_strings():
    with pytest.raises(TypeError, match="voice_aliases"):
        ServeConfig(voice_aliases=[("alloy", "narrator")])
