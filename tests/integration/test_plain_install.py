"""A plain install (no extras), from uv.lock: every CLI command starts, and `taogate keys` and
`taogate jobs` talk to a running service with only the runtime dependencies."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import typer.main

from taogate._settings import SimSettings
from taogate.cli import app
from taogate.testing import SimKey, Simulator
from tests.conftest import free_port, start_serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "plain-install-credential-secret-0123456789"
TOKEN = "plain-install-admin-token-0123456789abcdef"
KEY = SimKey(app_key="60000077", secret=SECRET, qps=50.0)


def _commands() -> list[list[str]]:
    """Every command and sub-command of the CLI, as argument lists."""
    found: list[list[str]] = []

    def walk(group: object, prefix: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            found.append([*prefix, name])
            walk(command, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return found


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv with taogate and its runtime dependencies only, installed from uv.lock."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not installed; `make setup` installs it from uv.lock")
    venv = tmp_path_factory.mktemp("plain") / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "VIRTUAL_ENV": "",
    }
    sync = [uv, "sync", "--frozen", "--no-dev", "--no-editable", "--quiet"]
    subprocess.run(
        [*sync, "--python", sys.executable],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )
    return venv


def test_the_plain_install_has_no_extra(plain_venv: Path) -> None:
    python = plain_venv / "bin" / "python"
    for module in ("httpx", "matplotlib", "pytest", "uvloop"):
        probe = subprocess.run(
            [python, "-c", f"import {module}"], capture_output=True, timeout=60, check=False
        )
        assert probe.returncode != 0, f"{module} is in the plain install"


def test_every_command_starts_in_a_plain_install(plain_venv: Path) -> None:
    taogate = plain_venv / "bin" / "taogate"
    commands = _commands()
    assert ["keys"] in commands
    assert ["jobs", "status"] in commands
    for command in [[], *commands]:
        result = subprocess.run(
            [taogate, *command, "--help"], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, (command, result.stderr)
        assert "Usage" in result.stdout, command


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Path, asyncio.subprocess.Process]]:
    async with Simulator([KEY], settings=SimSettings(latency_ms=(5.0, 5.0)), port=0) as sim:
        port = free_port()
        config = tmp_path / "taogate.toml"
        config.write_text(
            f"""
[upstream]
url = "{sim.url}"

[[credentials]]
app_key = "{KEY.app_key}"
secret = "{SECRET}"
qps = 50

[server]
host = "127.0.0.1"
port = {port}

[[server.clients]]
name = "ops"
token = "{TOKEN}"
admin = true
""",
            encoding="utf-8",
        )
        proc = await start_serve(config, port)
        try:
            yield config, proc
        finally:
            proc.terminate()
            await proc.wait()


async def _taogate(venv: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        venv / "bin" / "taogate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_keys_and_jobs_against_a_running_service(
    plain_venv: Path, service: tuple[Path, asyncio.subprocess.Process]
) -> None:
    config, _ = service
    code, out, err = await _taogate(plain_venv, "keys", "--config", str(config))
    assert code == 0, err
    assert "credentials at http://127.0.0.1:" in out
    assert "600…077" in out  # the masked key
    assert SECRET not in out + err
    assert TOKEN not in out + err
    # jobs need Redis, which this service has not: a clear answer, not a crash
    code, out, err = await _taogate(plain_venv, "jobs", "status", "x", "--config", str(config))
    assert code == 1
    assert "Traceback" not in out + err
    assert "answered" in out + err
