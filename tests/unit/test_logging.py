"""Log redaction: secrets and URL passwords never reach a log line, at any depth."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from taogate import Settings
from taogate._logging import configure_logging

CRED = "credential-secret-value-0001"
TOKEN = "client-token-value-abcdefghijklmnopqrstuvwxyz"
REDIS_PW = "redis-pass-word-9"
PROXY_PW = "proxy-pass-word-7"


class Holder:
    """An object whose ``str`` carries a secret (what ``default=str`` would write)."""

    def __str__(self) -> str:
        return f"Holder({CRED})"


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    settings = Settings(
        credentials=[{"app_key": "12345678", "secret": CRED}],
        redis={"url": f"redis://:{REDIS_PW}@127.0.0.1:6399/0"},
        egress=[{"name": "p", "proxy": f"http://user:{PROXY_PW}@10.0.0.5:3128"}],
        server={"clients": [{"name": "site", "token": TOKEN}]},
    )
    stream = io.StringIO()
    saved = {n: _state(logging.getLogger(n)) for n in _LOGGERS}
    configure_logging("debug", secrets=settings.secret_values(), stream=stream)
    try:
        yield logging.getLogger("taogate.test.logging"), stream
    finally:
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.level, logger.propagate = handlers, level, propagate


def _state(logger: logging.Logger) -> tuple[list[logging.Handler], int, bool]:
    return list(logger.handlers), logger.level, logger.propagate


_LOGGERS = ("taogate", "uvicorn", "uvicorn.error", "uvicorn.access")
SECRETS = (CRED, TOKEN, REDIS_PW, PROXY_PW)


def written(stream: io.StringIO) -> tuple[str, list[dict[str, Any]]]:
    text = stream.getvalue()
    for secret in SECRETS:
        assert secret not in text
    return text, [json.loads(line) for line in text.splitlines()]


def test_the_message_and_its_arguments(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    log.info("calling with %s and %s", CRED, TOKEN)
    log.info("redis at redis://:%s@10.1.1.1:6379/0", REDIS_PW)
    _, docs = written(stream)
    assert docs[1]["msg"] == "redis at redis://***@10.1.1.1:6379/0"


def test_exception_text_and_stack(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    try:
        raise RuntimeError(f"cannot connect to http://u:{PROXY_PW}@proxy:3128 with {TOKEN}")
    except RuntimeError:
        log.exception("upstream failed")
    log.warning("with a stack %s", "here", stack_info=True)
    _, docs = written(stream)
    assert "RuntimeError: cannot connect to http://***@proxy:3128" in docs[0]["exc"]
    assert "Stack (most recent call last)" in docs[1]["stack"]


def test_extra_fields_at_any_depth(lines: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = lines
    log.info(
        "nested",
        extra={
            "urls": [f"redis://:{REDIS_PW}@h:6379", ("x", f"http://a:{PROXY_PW}@p:1")],
            "config": {"token": TOKEN, "deeper": {"list": [{"secret": CRED}]}, CRED: 1},
            "holder": Holder(),
            "count": 3,
            "ok": True,
            "none": None,
        },
    )
    _, docs = written(stream)
    doc = docs[0]
    assert doc["urls"][0] == "redis://***@h:6379"
    assert doc["urls"][1] == ["x", "http://***@p:1"]
    assert doc["count"] == 3
    assert doc["ok"] is True
    assert doc["none"] is None
    assert doc["holder"].startswith("Holder(…")


def test_a_percent_encoded_password_is_redacted_in_both_forms() -> None:
    settings = Settings(redis={"url": "redis://:p%40ss-word-secret@127.0.0.1:6399/0"})
    assert set(settings.secret_values()) == {"p%40ss-word-secret", "p@ss-word-secret"}
