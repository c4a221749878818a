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


def _key_row(key: str, status: str = "active", **kw: object) -> dict[str, object]:
    """A credential row as /v1/admin/keys answers it."""
    row: dict[str, object] = {
        "credential": key,
        "egress": "default",
        "account": None,
        "status": status,
        "rate": 9.0,
        "configured_qps": 10.0,
        "banned_for_s": 0.0,
        "probe_in_s": None,
        "exhausted_for_s": None,
        "calls": 120,
        "calls_today": 120,
        "daily_budget": 100000,
        "rate_limited": 0,
        "method_limited": 0,
        "ip_refused": 0,
        "refused_egresses": [],
        "invalid": 0,
        "in_flight": 0,
        "cost": "1.20",
        "cost_today": "1.20",
    }
    return row | kw


def _printed(doc: dict[str, object]) -> list[str]:
    from rich.console import Console

    from taogate.cli._admin import pool_view

    out = Console(width=140, record=True, color_system=None)
    for part in pool_view(doc, "http://127.0.0.1:8080"):
        out.print(part, highlight=False)
    return out.export_text().splitlines()


KEYS_DOC: dict[str, object] = {
    "breaker": "closed",
    "credentials": [
        _key_row(
            "600…001",
            "not-whitelisted",
            account="promoter-east",
            egress="proxy-east-1",
            ip_refused=4,
            refused_egresses=["default", "proxy-east-1"],
            method_limited=2,
        ),
        _key_row("600…002", "exhausted", account="promoter-east", exhausted_for_s=27062.4),
        _key_row("600…003", "quarantined", probe_in_s=30.0, rate_limited=3, invalid=1),
    ],
    "egresses": [
        {
            "egress": "default",
            "via": None,
            "credentials": 2,
            "rate": 90.0,
            "max_qps": 90.0,
            "calls": 240,
            "unreachable": 0,
            "paused_for_s": 0.0,
        }
    ],
    "scopes": [
        {
            "kind": "account",
            "name": "promoter-east",
            "qps": 40.0,
            "rate": 36.0,
            "credentials": 2,
            "calls": 240,
            "limited": 1,
            "paused_for_s": 0.4,
        },
        {
            "kind": "method",
            "name": "taobao.tbk.item.info.get",
            "qps": None,
            "rate": None,
            "credentials": 3,
            "calls": 360,
            "limited": 0,
            "paused_for_s": 0.0,
        },
    ],
}


def test_keys_shows_accounts_code_11_the_spent_day_and_shared_limits_in_140_columns() -> None:
    lines = _printed(KEYS_DOC)
    assert max(len(line) for line in lines) <= 140
    text = "\n".join(lines)
    header = next(line for line in lines if line.startswith("key "))
    for column in ("account", "egress", "status", "day resets in", "code 7", "code 11", "cost"):
        assert f" {column} " in f" {header} ", column  # whole, not cut short
    first = next(line for line in lines if line.startswith("600…001"))
    assert "promoter-east" in first
    assert "proxy-east-1" in first
    assert "not-whitelisted" in first
    assert "7h 31m" in next(line for line in lines if line.startswith("600…002"))
    assert "600…001: its IP whitelist refuses egress default, proxy-east-1 (code 11)" in text
    assert "600…001: the platform banned its calls of the API method 2 times" in text
    assert "limits shared by keys" in text
    shared = [line.split() for line in lines if line.startswith(("account ", "method "))]
    assert shared == [
        ["account", "promoter-east", "2", "36/40", "240", "1", "0.4"],
        ["method", "taobao.tbk.item.info.get", "3", "not", "paced", "360", "0"],
    ]


def test_keys_still_prints_what_an_older_service_answers() -> None:
    old = {k: v for k, v in KEYS_DOC.items() if k != "scopes"}
    new_fields = ("account", "exhausted_for_s", "method_limited", "ip_refused", "refused_egresses")
    old["credentials"] = [
        {k: v for k, v in row.items() if k not in new_fields}
        for row in KEYS_DOC["credentials"]  # type: ignore[attr-defined]
    ]
    text = "\n".join(_printed(old))
    assert "600…003" in text
    assert "quarantined" in text
    assert "egresses" in text
    assert "limits shared by keys" not in text
