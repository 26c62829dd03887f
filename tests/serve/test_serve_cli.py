"""`nutq serve` argument parsing and `ServeConfig` validation (no server is started)."""

from __future__ import annotations

import re

import pytest

import nutq.tts  # noqa: F401 - bound to the real Engine before a test below patches the module's
from nutq.cli import build_parser
from nutq.serve.config import ServeConfig


def test_serve_subcommand_is_registered_with_its_options():
    args = build_parser().parse_args(["serve", "--model-dir", "/m", "--port", "9000", "--max-sessions", "3",
                                      "--api-key", "a", "--api-key", "b"])
    assert (args.command, args.model_dir, args.port, args.max_sessions, args.api_key) == \
        ("serve", "/m", 9000, 3, ["a", "b"])
    assert args.host == "127.0.0.1", "the default must not expose the server beyond this machine"


def test_serve_config_refuses_values_that_would_misbehave():
    with pytest.raises(TypeError, match="tuple of strings"):
        ServeConfig(api_keys="secret")
    with pytest.raises(ValueError, match="non-empty"):
        ServeConfig(api_keys=("",))
    with pytest.raises(ValueError, match="max_input_chars must be >= 1"):
        ServeConfig(max_input_chars=0)
    # more chunks ahead than the engine ever makes would be an option that silently does nothing
    with pytest.raises(ValueError, match="stream_buffer_chunks must be <= 4"):
        ServeConfig(stream_buffer_chunks=5)


def test_operations_flags_default_to_the_serve_config_defaults():
    args = build_parser().parse_args(["serve"])
    d = ServeConfig()
    assert (args.max_streams_per_key, args.idle_timeout, args.drain_timeout, args.ws_max_size) == \
        (d.max_streams_per_key, d.idle_timeout_s, d.drain_timeout_s, d.max_frame_bytes)
    assert (args.log_format, args.private_metrics) == ("text", False)
    args = build_parser().parse_args(["serve", "--drain-timeout", "2.5", "--log-format", "json", "--ws-max-size",
                                      "4096", "--idle-timeout", "9", "--max-streams-per-key", "3", "--private-metrics"])
    assert (args.drain_timeout, args.log_format, args.ws_max_size, args.idle_timeout, args.max_streams_per_key,
            args.private_metrics) == (2.5, "json", 4096, 9.0, 3, True)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--log-format", "xml"])


def test_max_new_tokens_and_voice_aliases_reach_the_server_config(monkeypatch, capsys):
    from nutq.cli import main

    class Stop(Exception):
        pass

    seen = {}

    def fake_create_app(tts, config):
        seen["config"] = config
        raise Stop  # before a server would start

    monkeypatch.setattr("nutq.checkpoints.files.resolve", lambda *a, **k: "ckpt")
    monkeypatch.setattr("nutq.engine.engine.Engine", lambda *a, **k: None)
    monkeypatch.setattr("nutq.serve.logs.configure_logging", lambda *a: None)
    monkeypatch.setattr("nutq.serve.app.create_app", fake_create_app)
    assert build_parser().parse_args(["serve"]).max_new_tokens == ServeConfig().max_new_tokens
    with pytest.raises(Stop):
        main(["serve", "--max-new-tokens", "600", "--voice-alias", "alloy=narrator", "--voice-alias", "ash=guest"])
    assert seen["config"].max_new_tokens == 600
    assert seen["config"].voice_aliases == {"alloy": "narrator", "ash": "guest"}
    for bad, message in ((["--voice-alias", "alloy"], "NAME=VOICE"), (["--max-new-tokens", "0"], "max_new_tokens")):
        assert main(["serve", *bad]) == 1
        err = capsys.readouterr().err
        assert err.startswith("nutq: error:") and message in err and "Traceback" not in err


def test_readme_server_example_shows_the_defaults():
    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text()
    example = readme[readme.index("nutq serve --model-dir"):].split("```")[0]
    shown = re.findall(r"\[--([a-z-]+) (\d+)\]", example)
    assert {"max-queue", "max-new-tokens"} <= {flag for flag, _ in shown}, example
    defaults = vars(build_parser().parse_args(["serve"]))
    for flag, value in shown:
        assert defaults[flag.replace("-", "_")] == int(value), f"README shows --{flag} {value}"


def test_abuse_limit_flags_reach_the_serve_config():
    from nutq.serve.cli import _abuse_limits

    d = ServeConfig()
    assert ServeConfig(**_abuse_limits(build_parser().parse_args(["serve"]))) == d
    args = build_parser().parse_args(["serve", "--send-timeout", "3", "--stream-buffer-chunks", "4", "--max-body-bytes",
                                      "1000", "--max-voices", "5", "--max-voices-per-key", "2",
                                      "--max-concurrent-uploads", "1"])
    got = ServeConfig(**_abuse_limits(args))
    assert (got.send_timeout_s, got.stream_buffer_chunks, got.max_body_bytes, got.max_voices, got.max_voices_per_key,
            got.max_concurrent_uploads) == (3.0, 4, 1000, 5, 2, 1)


def test_the_per_client_stream_limit_never_exceeds_the_total():
    # default: half of what the server admits (decoding in KV slots plus waiting in the queue)
    assert ServeConfig().streams_per_key(64) == 32 and ServeConfig().streams_per_key(1) == 1
    assert ServeConfig().streams_per_key(3) == 1
    assert ServeConfig(max_streams_per_key=64).streams_per_key(8) == 8
    assert ServeConfig(max_streams_per_key=2).streams_per_key(8) == 2
