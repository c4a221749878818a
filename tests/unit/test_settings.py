"""taogate.toml plus TAOGATE_* overrides; secrets never shown."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from taogate import ConfigurationError, load_settings

SECRET = "s3cr3t-value-never-shown"

MINIMAL = """
[upstream]
url = "http://127.0.0.1:8787/router/rest"

[[credentials]]
app_key = "12345678"
secret_env = "TG_TEST_SECRET"
qps = 10
daily_budget = 100000
cost_per_call = "0.002"
"""


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TG_TEST_SECRET", SECRET)
    path = tmp_path / "taogate.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    return path


def test_minimal_file(config: Path) -> None:
    settings = load_settings(config)
    assert settings.upstream.url == "http://127.0.0.1:8787/router/rest"
    assert settings.upstream.sign_method == "hmac-sha256"
    (cred,) = settings.build_credentials()
    assert cred.secret == SECRET
    assert cred.cost_per_call == Decimal("0.002")
    assert settings.limits.safety_factor == 0.8
    assert settings.redis.url is None


def test_environment_overrides_the_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAOGATE_UPSTREAM__TIMEOUT_S", "1.5")
    monkeypatch.setenv("TAOGATE_LIMITS__SAFETY_FACTOR", "0.9")
    monkeypatch.setenv("TAOGATE_REDIS__URL", "redis://:pw@127.0.0.1:1/0")
    settings = load_settings(config)
    assert settings.upstream.timeout_s == 1.5
    assert settings.upstream.url == "http://127.0.0.1:8787/router/rest"  # kept from the file
    assert settings.limits.safety_factor == 0.9
    assert settings.redis.url == "redis://:pw@127.0.0.1:1/0"


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAOGATE_CREDENTIALS", f'[{{"app_key": "k1", "secret": "{SECRET}"}}]')
    (cred,) = load_settings().build_credentials()
    assert cred.app_key == "k1"


def test_secrets_never_in_repr_or_masked_output(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAOGATE_REDIS__URL", "redis://user:redispass@127.0.0.1:1/0")
    settings = load_settings(config)
    for text in (
        repr(settings),
        str(settings),
        repr(settings.build_credentials()),
        str(settings.masked()),
    ):
        assert SECRET not in text
        assert "redispass" not in text
    masked = settings.masked()
    assert masked["credentials"][0]["secret"].startswith("…")
    assert masked["redis"]["url"] == "redis://***@127.0.0.1:1/0"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[[credentials]]\napp_key = "k"\nsecret = "x"\nqps = -1\n', "credentials[0].qps"),
        ('[[credentials]]\napp_key = "k"\n', "credentials[0]"),
        ('[[credentials]]\napp_key = "k"\nsecret = "x"\nsecret_env = "Y"\n', "credentials[0]"),
        (
            '[[credentials]]\napp_key = "k"\nsecret_env = "TG_UNSET_VAR_FOR_TEST"\n',
            "credentials[0]",
        ),
        ('[upstream]\nsign_method = "sha1"\n', "upstream.sign_method"),
        ('[upstream]\nurll = "x"\n', "upstream.urll"),
        ("[limits]\nsafety_factor = 1.5\n", "limits.safety_factor"),
        ('[upstream]\nid_pattern = "(["\n', "upstream.id_pattern"),
        ("[sim]\nlatency_ms = [500, 200]\n", "sim.latency_ms"),
    ],
)
def test_wrong_values_name_their_field(tmp_path: Path, body: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert info.value.field == field
    assert str(info.value).startswith(f"{path}: {field}")


def test_duplicate_keys_and_unknown_egress(tmp_path: Path) -> None:
    path = tmp_path / "dup.toml"
    path.write_text(
        '[[credentials]]\napp_key = "12345678"\nsecret = "a"\n'
        '[[credentials]]\napp_key = "12345678"\nsecret = "b"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError, match=r"app_key listed twice: 123…678"):
        load_settings(path)
    path.write_text(
        '[[credentials]]\napp_key = "k1"\nsecret = "a"\negress = "nope"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match="unknown egress 'nope'"):
        load_settings(path)


def test_accounts_are_declared_once_and_named_by_their_keys(tmp_path: Path) -> None:
    path = tmp_path / "accounts.toml"
    path.write_text(
        '[[accounts]]\nname = "alimama-main"\nqps = 40\n'
        '[[accounts]]\nname = "second"\n'
        '[[credentials]]\napp_key = "k1"\nsecret = "a"\naccount = "alimama-main"\n'
        '[[credentials]]\napp_key = "k2"\nsecret = "b"\n',
        encoding="utf-8",
    )
    settings = load_settings(path)
    main, second = settings.build_accounts()
    assert (main.name, main.qps) == ("alimama-main", 40.0)
    assert second.qps == 40.0  # the reported default
    k1, k2 = settings.build_credentials()
    assert k1.account == "alimama-main"
    assert k2.account is None
    path.write_text(
        '[[credentials]]\napp_key = "k1"\nsecret = "a"\naccount = "nope"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match=r"unknown account 'nope'.*\[\[accounts\]\]"):
        load_settings(path)
    path.write_text('[[accounts]]\nname = "a"\n[[accounts]]\nname = "a"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="account name listed twice"):
        load_settings(path)
    path.write_text('[[accounts]]\nname = "a"\nqps = 0\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="accounts"):
        load_settings(path)


def test_egresses_default_and_spread(tmp_path: Path) -> None:
    path = tmp_path / "egress.toml"
    creds = "".join(f'[[credentials]]\napp_key = "k{i}"\nsecret = "s{i}"\n' for i in range(4))
    path.write_text(creds + "[limits]\nsafety_factor = 0.9\n", encoding="utf-8")
    settings = load_settings(path)
    (implicit,) = settings.build_egresses()
    assert implicit.name == "default"
    assert implicit.max_qps == pytest.approx(90.0)
    assert {c.egress for c in settings.build_credentials()} == {"default"}
    path.write_text(
        creds.replace('secret = "s3"', 'secret = "s3"\negress = "a"')
        + '[[egress]]\nname = "a"\nlocal_address = "127.0.0.2"\nmax_qps = 20\n'
        + '[[egress]]\nname = "b"\nproxy = "http://user:pw@127.0.0.1:3128"\n',
        encoding="utf-8",
    )
    settings = load_settings(path)
    a, b = settings.build_egresses()
    assert (a.max_qps, a.local_address) == (20.0, "127.0.0.2")
    assert b.max_qps == pytest.approx(80.0)  # 100 x the default safety factor 0.8
    assert "pw" not in repr(b)
    assert "pw" not in repr(settings)
    # credentials naming none are spread in turn; a named one stays where it is
    assert [c.egress for c in settings.build_credentials()] == ["a", "b", "a", "a"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[[egress]]\nname = "a"\n[[egress]]\nname = "a"\n', "egress name listed twice"),
        ('[[egress]]\nname = "a"\nproxy = "socks5://h:1"\n', "proxy URL"),
        ('[[egress]]\nname = "a"\nmax_qps = 0\n', "egress"),
    ],
)
def test_bad_egresses_are_refused(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[credentials]]\napp_key = "k1"\nsecret = "a"\n' + body, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=message):
        load_settings(path)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    bad = tmp_path / "broken.toml"
    bad.write_text("[upstream\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_settings(bad)


def test_a_wrong_secret_value_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        f'[[credentials]]\napp_key = "k"\nsecret = "{SECRET}"\nqps = "fast"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert SECRET not in str(info.value)


def test_malformed_json_in_the_environment_is_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAOGATE_CREDENTIALS", '[{"app_key": "1234", "secret": "' + SECRET + '"')
    with pytest.raises(ConfigurationError, match="environment: credentials: not a valid") as info:
        load_settings(None)
    assert SECRET not in str(info.value)


def test_a_short_token_from_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_SHORT_TOKEN", "t" * 31)
    monkeypatch.setenv(
        "TAOGATE_SERVER__CLIENTS", '[{"name": "batch-jobs", "token_env": "TG_SHORT_TOKEN"}]'
    )
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "client 'batch-jobs'" in str(caught.value)
    assert "t" * 31 not in str(caught.value)


def test_redis_and_proxy_passwords_are_secrets(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(
        '[redis]\nurl = "redis+sentinel://:sentinel-pw-1@10.0.0.1:26379,10.0.0.2:26379/m"\n'
        '[[egress]]\nname = "a"\nproxy = "http://user:proxy-pw-2@10.0.1.5:3128"\n'
        '[[egress]]\nname = "b"\nproxy = "http://10.0.1.6:3128"\n',
        encoding="utf-8",
    )
    values = load_settings(path).secret_values()
    assert "sentinel-pw-1" in values
    assert "proxy-pw-2" in values
    assert "user" not in values
