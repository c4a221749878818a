"""Secrets from mounted files (``secret_file``), re-read when they change so keys rotate live.

A secret store hands a process its secret as a file: Vault agent renders one, the Secrets
Store CSI driver and Kubernetes Secret volumes mount one, and each rewrites it when the secret
is rotated — by renaming a new file over the old, or (Kubernetes) by swapping the ``..data``
symlink to a new directory. :class:`SecretFiles` re-reads every file every ``poll_s`` seconds,
when asked (SIGHUP, :meth:`taogate.Gateway.reload_secrets`) and when the upstream refuses a
credential, and hands a changed secret to ``on_rotate`` (the credential pool, which signs the
next calls with it; calls already signed finish as they are).

Each check opens the path, so symlinks are followed afresh, and compares a digest of the
content, not the file's timestamps: a ``..data`` swap, a rename and an in-place rewrite within
the file system's timestamp granularity are all seen. A secret file is a few bytes, so reading
it costs about what a ``stat`` does. A file that cannot be read keeps the secret in use.
No secret reaches a log, an exception or a metric: credentials appear as masked app keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from taogate._errors import ConfigurationError
from taogate._logging import redact_secret
from taogate._masking import mask_id

__all__ = ["MAX_SECRET_BYTES", "SecretFileStats", "SecretFiles", "read_secret_file"]

log = logging.getLogger("taogate.secrets")

#: A secret file larger than this is refused (it is not a secret, or not the right file).
MAX_SECRET_BYTES = 64 * 1024


def read_secret_file(path: str | os.PathLike[str]) -> str:
    """The secret held in ``path``: UTF-8 text without its trailing newline.

    Raises :class:`ConfigurationError` naming the file — never showing any of its content —
    when it is missing, unreadable, too large, not UTF-8 text, or empty.
    """
    where = f"secret_file {os.fspath(path)}"
    try:
        with open(path, "rb") as f:  # open() follows symlinks afresh each time
            raw = f.read(MAX_SECRET_BYTES + 1)
    except FileNotFoundError:
        raise ConfigurationError(f"{where}: no such file", field="secret_file") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{where}: is a directory", field="secret_file") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigurationError(
            f"{where}: cannot be read ({reason})", field="secret_file"
        ) from None
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigurationError(
            f"{where}: larger than {MAX_SECRET_BYTES} bytes", field="secret_file"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # the decoder's message quotes the offending byte: say nothing of the content
        raise ConfigurationError(f"{where}: not UTF-8 text", field="secret_file") from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise ConfigurationError(f"{where}: is empty", field="secret_file")
    return secret


def _digest(secret: str) -> bytes:
    return hashlib.blake2b(secret.encode(), digest_size=16).digest()


@dataclass(slots=True)
class _Watched:
    """One credential's secret file and what became of it."""

    app_key: str
    path: Path
    digest: bytes  # of the secret in use, never the secret itself
    rotations: int = 0
    failures: int = 0
    failing: bool = False  # a read failure was logged; the next ones are quiet until it reads


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretFileStats:
    """One credential's secret file at one moment (the key masked, never the secret)."""

    credential: str
    path: str
    #: new secrets read and swapped in
    rotations: int
    #: checks that could not read the file (the secret in use was kept)
    failures: int
    #: whether the last check failed
    failing: bool


class SecretFiles:
    """The ``secret_file`` of each credential, checked for a new secret on demand and by a poll.

    ``files`` maps app keys to paths, ``current`` the app keys to the secrets in use.
    ``on_rotate(app_key, secret)`` is called, on the event loop's thread, with each new secret;
    it must swap the secret in one step (the pool replaces the credential it hands out).
    """

    def __init__(
        self,
        files: Mapping[str, str | os.PathLike[str]],
        current: Mapping[str, str],
        *,
        on_rotate: Callable[[str, str], object],
        poll_s: float = 2.0,
    ) -> None:
        if poll_s < 0:
            raise ValueError("poll_s must be >= 0 (0: no polling)")
        self._watched = {
            key: _Watched(key, Path(path), _digest(current[key])) for key, path in files.items()
        }
        self._on_rotate = on_rotate
        self.poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        keys = ", ".join(mask_id(k) for k in self._watched)
        return f"SecretFiles([{keys}], poll_s={self.poll_s:g})"

    def check(self, trigger: str = "check") -> list[str]:
        """Re-read every file now; the app keys whose secret changed (and was swapped in)."""
        return [key for key in self._watched if self.check_one(key, trigger)]

    def check_one(self, app_key: str, trigger: str = "check") -> bool:
        """Re-read ``app_key``'s file; ``True`` if it held a new secret, now swapped in.

        A file that cannot be read keeps the secret in use: the failure is counted, and logged
        once until the file reads again.
        """
        w = self._watched.get(app_key)
        if w is None:
            return False
        masked = mask_id(app_key)
        try:
            secret = read_secret_file(w.path)
        except ConfigurationError as exc:
            w.failures += 1
            level = logging.DEBUG if w.failing else logging.WARNING
            w.failing = True
            log.log(
                level,
                "credential %s: %s; keeping the secret in use",
                masked,
                exc,
                extra={"credential": masked, "trigger": trigger},
            )
            return False
        if w.failing:
            w.failing = False
            log.info("credential %s: secret file readable again", masked)
        digest = _digest(secret)
        if digest == w.digest:
            return False
        redact_secret(secret)  # before anything could log it
        self._on_rotate(app_key, secret)
        w.digest = digest
        w.rotations += 1
        log.info(
            "credential %s secret rotated",
            masked,
            extra={"credential": masked, "trigger": trigger},
        )
        return True

    # --- the poll ------------------------------------------------------------------------

    def start(self) -> None:
        """Poll every ``poll_s`` seconds on the running loop (nothing with ``poll_s = 0``)."""
        if self._task is None and self.poll_s > 0 and self._watched:
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._poll(), name="taogate-secret-files")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                self.check("file changed")
            except Exception:  # a bug in a rotation must not end the poll for good
                log.exception("checking the secret files failed")

    async def aclose(self) -> None:
        """Stop the poll."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats(self) -> tuple[SecretFileStats, ...]:
        """One row per file for tools and metrics: masked key, path, rotations, failures."""
        return tuple(
            SecretFileStats(
                credential=mask_id(w.app_key),
                path=str(w.path),
                rotations=w.rotations,
                failures=w.failures,
                failing=w.failing,
            )
            for w in self._watched.values()
        )
