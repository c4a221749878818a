"""Secrets from files: loading, validation, rotation on change, and never a secret shown."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from taogate import ConfigurationError, Credential, load_settings
from taogate._logging import JsonFormatter, RedactSecrets
from taogate._secrets import MAX_SECRET_BYTES, SecretFiles, read_secret_file
from taogate.cli import app
from taogate.quota import CredentialPool, CredentialStatus
from taogate.testing import FakeClock

OLD = "old-secret-from-the-store-0001"
NEW = "new-secret-from-the-store-0002"


def write_atomically(path: Path, text: str) -> None:
    """What Vault agent and the CSI driver do: write a new file, rename it over the old."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


class KubeSecretVolume:
    """A Kubernetes Secret volume: ``key -> ..data/key``, ``..data -> ..<timestamp>/``.

    An update writes a new timestamped directory and swaps ``..data`` to it by renaming a new
    symlink over it, as the kubelet's atomic writer does.
    """

    def __init__(self, root: Path, key: str, value: str) -> None:
        self.root, self.key, self.version = root, key, 0
        root.mkdir(parents=True, exist_ok=True)
        self._write_version(value)
        (root / key).symlink_to(Path("..data") / key)

    @property
    def path(self) -> Path:
        return self.root / self.key

    def _write_version(self, value: str) -> None:
        self.version += 1
        directory = self.root / f"..2026_01_01_00_00_0{self.version}.000"
        directory.mkdir()
        (directory / self.key).write_text(value, encoding="utf-8")
        link = self.root / "..data_tmp"
        link.symlink_to(directory.name)
        link.replace(self.root / "..data")

    def update(self, value: str) -> None:
        self._write_version(value)


# --- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        (f"{OLD}\n", OLD),
        (f"{OLD}\r\n", OLD),
        (OLD, OLD),
        (" spaced secret \n", " spaced secret "),
    ],
)
def test_read_strips_only_the_trailing_newline(tmp_path: Path, content: str, secret: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content.encode())
    assert read_secret_file(path) == secret


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"\n", "is empty"),
        (b"\xff\xfe" + OLD.encode(), "not UTF-8 text"),
        (b"x" * (MAX_SECRET_BYTES + 1), "larger than"),
    ],
)
def test_unusable_files_are_named_never_shown(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match=message) as info:
        read_secret_file(path)
    assert str(path) in str(info.value)
    assert OLD not in str(info.value)
    assert "\\xff" not in str(info.value)


def test_missing_unreadable_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        read_secret_file(tmp_path / "absent")
    with pytest.raises(ConfigurationError, match="is a directory"):
        read_secret_file(tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text(OLD, encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"cannot be read \(Not a directory\)") as info:
        read_secret_file(blocked / "secret")
    assert OLD not in str(info.value)


# --- settings -----------------------------------------------------------------------------


def config_with(tmp_path: Path, credential: str) -> Path:
    path = tmp_path / "taogate.toml"
    path.write_text(f'[[credentials]]\napp_key = "12345678"\n{credential}\n', encoding="utf-8")
    return path


def test_secret_file_in_settings(tmp_path: Path) -> None:
    secret = tmp_path / "key1"
    secret.write_text(OLD + "\n", encoding="utf-8")
    settings = load_settings(config_with(tmp_path, f'secret_file = "{secret}"'))
    (cred,) = settings.build_credentials()
    assert cred.secret == OLD
    assert settings.credentials[0].secret_file == secret
    assert OLD in settings.secret_values()  # for log redaction
    masked = settings.masked()["credentials"][0]
    assert masked["secret_file"] == str(secret)
    assert masked["secret"].startswith("…")
    for text in (repr(settings), str(settings), repr(cred), str(settings.masked())):
        assert OLD not in text


@pytest.mark.parametrize(
    "credential",
    [
        'secret = "inline"\nsecret_file = "/run/secrets/key1"',
        'secret_env = "TG_SOME_VAR"\nsecret_file = "/run/secrets/key1"',
        'secret = "inline"\nsecret_env = "TG_SOME_VAR"',
        "qps = 10",
    ],
)
def test_exactly_one_source_of_the_secret(tmp_path: Path, credential: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings(config_with(tmp_path, credential))
    assert info.value.field == "credentials[0]"
    assert "give exactly one of secret, secret_env or secret_file" in str(info.value)


def test_a_bad_secret_file_is_a_clear_error_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigurationError, match=f"secret_file {missing}: no such file"):
        load_settings(config_with(tmp_path, f'secret_file = "{missing}"'))
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="is empty"):
        load_settings(config_with(tmp_path, f'secret_file = "{empty}"'))


def test_config_check_shows_the_file_not_the_secret(tmp_path: Path) -> None:
    secret = tmp_path / "key1"
    secret.write_text(OLD, encoding="utf-8")
    path = config_with(tmp_path, f'secret_file = "{secret}"')
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert str(secret) in result.output.replace("\n", "")
    assert OLD not in result.output
    secret.unlink()
    result = CliRunner().invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert "no such file" in result.output


def test_poll_interval_setting(tmp_path: Path) -> None:
    path = tmp_path / "taogate.toml"
    path.write_text("[secrets]\npoll_s = 0\n", encoding="utf-8")
    assert load_settings(path).secrets.poll_s == 0
    path.write_text("[secrets]\npoll_s = -1\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as info:
        load_settings(path)
    assert info.value.field == "secrets.poll_s"


# --- rotation -----------------------------------------------------------------------------


class Rotations:
    """Records what a :class:`SecretFiles` hands over (stands in for the pool)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, app_key: str, secret: str) -> None:
        self.seen.append((app_key, secret))


def test_atomic_rename_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "key1"
    path.write_text(OLD, encoding="utf-8")
    got = Rotations()
    files = SecretFiles({"12345678": path}, {"12345678": OLD}, on_rotate=got)
    assert files.check() == []  # unchanged: nothing happens
    write_atomically(path, NEW + "\n")
    assert files.check() == ["12345678"]
    assert got.seen == [("12345678", NEW)]
    assert files.check() == []  # handed over once
    assert files.stats()[0].rotations == 1


def test_kubernetes_data_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    volume = KubeSecretVolume(tmp_path / "vol", "key1", OLD)
    got = Rotations()
    files = SecretFiles({"12345678": volume.path}, {"12345678": OLD}, on_rotate=got)
    assert files.check() == []
    volume.update(NEW)
    assert files.check_one("12345678") is True
    assert got.seen == [("12345678", NEW)]


def test_in_place_rewrite_of_the_same_size_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "key1"
    path.write_text(OLD, encoding="utf-8")
    stat = path.stat()
    got = Rotations()
    files = SecretFiles({"12345678": path}, {"12345678": OLD}, on_rotate=got)
    same_size = OLD[:-1] + "9"
    path.write_text(same_size, encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # timestamps tell nothing
    assert files.check() == ["12345678"]
    assert got.seen == [("12345678", same_size)]


def test_a_failed_read_keeps_the_secret_counts_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key1"
    path.write_text(OLD, encoding="utf-8")
    got = Rotations()
    files = SecretFiles({"12345678": path}, {"12345678": OLD}, on_rotate=got)
    caplog.set_level(logging.DEBUG, logger="taogate.secrets")
    path.write_text("", encoding="utf-8")  # a writer that truncates first
    assert files.check() == []
    path.unlink()
    assert files.check() == []
    assert got.seen == []
    row = files.stats()[0]
    assert row.failures == 2
    assert row.failing is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "123…678" in warnings[0].getMessage()
    assert "12345678" not in warnings[0].getMessage()
    write_atomically(path, NEW)
    assert files.check() == ["12345678"]
    assert files.stats()[0].failing is False
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "credential 123…678 secret rotated" in messages
    for secret in (OLD, NEW):
        assert secret not in messages
        assert secret not in repr(files)


def test_a_rotated_secret_is_redacted_from_logs(tmp_path: Path) -> None:
    path = tmp_path / "key1"
    path.write_text(OLD, encoding="utf-8")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets([OLD]))  # what configure_logging installs at start
    logger = logging.getLogger("taogate.test.redaction")
    logger.addHandler(handler)
    try:
        files = SecretFiles({"12345678": path}, {"12345678": OLD}, on_rotate=Rotations())
        write_atomically(path, NEW)
        files.check()
        logger.warning("a careless line with %s and %s", OLD, NEW)
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "a careless line" in text
    assert OLD not in text
    assert NEW not in text


def test_poll_interval_is_validated() -> None:
    with pytest.raises(ValueError, match="poll_s"):
        SecretFiles({}, {}, on_rotate=Rotations(), poll_s=-1)


def test_an_unknown_key_is_no_rotation(tmp_path: Path) -> None:
    files = SecretFiles({}, {}, on_rotate=Rotations())
    assert files.check_one("12345678") is False
    assert files.stats() == ()


async def test_the_poll_survives_a_failed_rotation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key1"
    path.write_text(OLD, encoding="utf-8")
    seen: list[str] = []

    def on_rotate(app_key: str, secret: str) -> None:
        if not seen:
            seen.append("failed")
            raise RuntimeError("the pool said no")
        seen.append(secret)

    files = SecretFiles({"12345678": path}, {"12345678": OLD}, on_rotate=on_rotate, poll_s=0.01)
    files.start()
    try:
        write_atomically(path, NEW)
        async with asyncio.timeout(10):
            while NEW not in seen:  # the next poll tries again
                await asyncio.sleep(0.01)
    finally:
        await files.aclose()
    assert seen == ["failed", NEW]
    assert "checking the secret files failed" in caplog.text
    assert NEW not in caplog.text
    await files.aclose()  # closing twice is harmless


# --- the pool swaps the secret ------------------------------------------------------------


def test_pool_swaps_the_secret_and_keeps_the_quota_state() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([Credential(app_key="12345678", secret=OLD, qps=10)], clock=clock)
    in_flight = pool.try_acquire()
    assert in_flight is not None
    before = pool.snapshot()[0]
    pool.replace_secret("12345678", NEW)
    assert in_flight.credential.secret == OLD  # a call already signed keeps its secret
    assert pool.try_acquire() is None  # the GCRA state is the same: the next slot is later
    assert pool.snapshot()[0] == before
    clock.advance(1.0)
    lease = pool.try_acquire()
    assert lease is not None
    assert lease.credential.secret == NEW
    assert NEW not in repr(pool.credentials)
    with pytest.raises(KeyError):
        pool.replace_secret("unknown", NEW)


def test_a_call_signed_with_a_rotated_out_secret_does_not_quarantine() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([Credential(app_key="12345678", secret=OLD, qps=10)], clock=clock)
    old_lease = pool.try_acquire()
    assert old_lease is not None
    pool.replace_secret("12345678", NEW)
    assert pool.on_invalid(old_lease) is False
    (cred,) = pool.credentials
    assert pool.status(cred) is CredentialStatus.ACTIVE
    assert pool.snapshot()[0]["in_flight"] == 0
    clock.advance(1.0)
    new_lease = pool.try_acquire()
    assert new_lease is not None
    assert pool.on_invalid(new_lease) is True  # the new secret refused: that is real
    assert pool.status(cred) is CredentialStatus.QUARANTINED


def test_a_refusal_rechecks_the_secret_store_first(tmp_path: Path) -> None:
    path = tmp_path / "key1"
    path.write_text(OLD, encoding="utf-8")
    clock = FakeClock(1000.0)
    files = SecretFiles(
        {"12345678": path}, {"12345678": OLD}, on_rotate=lambda k, s: pool.replace_secret(k, s)
    )
    pool = CredentialPool(
        [Credential(app_key="12345678", secret=OLD, qps=10)],
        clock=clock,
        recheck_secret=lambda key: files.check_one(key, "credential refused"),
    )
    lease = pool.try_acquire()
    assert lease is not None
    write_atomically(path, NEW)  # the store has the new secret; no poll has seen it yet
    assert pool.on_invalid(lease) is False
    assert pool.credentials[0].secret == NEW


def test_a_new_secret_lets_a_quarantined_credential_probe_at_once() -> None:
    clock = FakeClock(1000.0)
    pool = CredentialPool([Credential(app_key="12345678", secret=OLD, qps=10)], clock=clock)
    lease = pool.try_acquire()
    assert lease is not None
    assert pool.on_invalid(lease) is True
    clock.advance(1.0)
    assert pool.try_acquire() is None  # quarantined: the probe is 30 s away
    pool.replace_secret("12345678", NEW)
    probe = pool.try_acquire()
    assert probe is not None
    assert probe.probe
    assert probe.credential.secret == NEW
    pool.on_success(probe)
    assert pool.status(pool.credentials[0]) is CredentialStatus.ACTIVE
