"""The command line: config check, help texts, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from taogate.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("taogate ")


def test_sim_help() -> None:
    result = runner.invoke(app, ["sim", "--help"])
    assert result.exit_code == 0
    assert "--config" in result.output
    assert "--port" in result.output


def test_config_check_masks_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_CLI_SECRET", "cli-secret-value")
    path = tmp_path / "taogate.toml"
    path.write_text(
        '[[credentials]]\napp_key = "12345678"\nsecret_env = "TG_CLI_SECRET"\n'
        '[[credentials]]\napp_key = "87654321"\nsecret = "inline-secret-value"\n'
        '[redis]\nurl = "redis://:redis-password@127.0.0.1:6380/0"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    for secret in ("cli-secret-value", "inline-secret-value", "redis-password"):
        assert secret not in result.output
    assert "2 credentials" in result.output


def test_config_check_names_the_field_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[credentials]]\napp_key = "k"\nsecret = "x"\nqps = 0\n', encoding="utf-8")
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "credentials[0].qps" in result.output


def test_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "taogate.example.toml"
    result = runner.invoke(app, ["config", "check", str(example)])
    assert result.exit_code == 0, result.output


def test_sim_refuses_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('[[credentials]]\napp_key = "k1"\nsecret = "x"\n', encoding="utf-8")
    result = runner.invoke(app, ["sim", "--config", str(path), "--latency-ms", "500,100"])
    assert result.exit_code == 2
    assert "latency_ms" in result.output
    empty = tmp_path / "empty.toml"
    empty.write_text("", encoding="utf-8")
    result = runner.invoke(app, ["sim", "--config", str(empty)])
    assert result.exit_code == 2
    assert "credentials" in result.output


def test_every_command_is_there() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sim", "serve", "keys", "demo", "bench", "config", "degrade"):
        assert command in result.output, command
    for command in ("serve", "keys", "demo", "bench", "degrade"):
        assert runner.invoke(app, [command, "--help"]).exit_code == 0, command


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["maybe"], "unknown action"),
        (["on", "--until", "2099-01-01T00:00:00Z", "--for", "1h"], "not both"),
        (["status", "--for", "1h"], "go with on or off"),
        (["on", "--for", "soon"], "is not a duration"),
        (["on", "--until", "tomorrow"], "RFC 3339"),
        (["on", "--until", "2020-01-01T00:00:00+08:00"], "has passed"),
    ],
)
def test_degrade_refuses_bad_options(tmp_path: Path, args: list[str], words: str) -> None:
    config = tmp_path / "taogate.toml"
    config.write_text('[[credentials]]\napp_key = "1"\nsecret = "x"\n', encoding="utf-8")
    result = runner.invoke(app, ["degrade", *args, "--config", str(config)])
    assert result.exit_code == 2
    assert words in result.output


SHORT_TOKEN = "short-token-value-31-characters"


def test_config_check_refuses_a_short_token_naming_the_client(tmp_path: Path) -> None:
    assert len(SHORT_TOKEN) == 31
    path = tmp_path / "taogate.toml"
    path.write_text(
        '[[credentials]]\napp_key = "12345678"\nsecret = "s"\n'
        f'[[server.clients]]\nname = "partner-a"\ntoken = "{SHORT_TOKEN}"\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "server.clients[0]" in result.output
    assert "'partner-a'" in result.output
    assert "32 characters" in result.output
    assert SHORT_TOKEN not in result.output
    # 32 characters are enough
    path.write_text(path.read_text(encoding="utf-8").replace(SHORT_TOKEN, SHORT_TOKEN + "x"))
    assert runner.invoke(app, ["config", "check", str(path)]).exit_code == 0


def test_serve_refuses_an_open_api_off_loopback(tmp_path: Path) -> None:
    path = tmp_path / "taogate.toml"
    path.write_text('[[credentials]]\napp_key = "12345678"\nsecret = "s"\n', encoding="utf-8")
    for host in ("0.0.0.0", "::", "192.0.2.10", "gateway.example"):  # noqa: S104
        result = runner.invoke(app, ["serve", "--config", str(path), "--host", host])
        assert result.exit_code == 2, result.output
        assert f"refusing to serve on {host}" in result.output
        assert "allow_anonymous" in result.output
