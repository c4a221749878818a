"""Checks of the deployment files by the tools operators would use, run as child processes.

Every tool is looked up in the virtualenv first (``make setup`` puts hadolint,
kubernetes-validate and promtool there), then on PATH. A missing tool fails its tests with
what to do: the deployment files must not pass CI unchecked. ``TAOGATE_SKIP_DEPLOY_TOOLS=1``
turns that failure into a skip on a machine that cannot have the tool; CI ignores it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

__all__ = ["DEPLOY", "ROOT", "find_tool", "kustomize_command", "run_tool"]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SKIP_ENV = "TAOGATE_SKIP_DEPLOY_TOOLS"


def _missing(what: str, hint: str) -> None:
    message = f"{what} is not installed: {hint}"
    if os.environ.get(SKIP_ENV) == "1" and not os.environ.get("CI"):
        pytest.skip(f"{message} ({SKIP_ENV}=1)")
    pytest.fail(f"{message}; or set {SKIP_ENV}=1 to skip these checks locally", pytrace=False)


def find_tool(name: str, hint: str = "run `make setup` (scripts/setup-deploy-tools)") -> str:
    """The path of ``name`` in the virtualenv or on PATH; a clear failure when it is neither."""
    local = Path(sys.prefix) / "bin" / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        _missing(name, hint)
    assert found is not None
    return found


def kustomize_command() -> list[str]:
    """``kustomize build`` where installed, else ``kubectl kustomize`` (the same renderer)."""
    if (kustomize := shutil.which("kustomize")) is not None:
        return [kustomize, "build"]
    if (kubectl := shutil.which("kubectl")) is not None:
        return [kubectl, "kustomize"]
    _missing("kustomize", "install kubectl (it carries kustomize) or kustomize")
    raise AssertionError("unreachable")


def run_tool(args: Sequence[str], *, cwd: Path = ROOT, timeout: float = 60) -> str:
    """Run a tool; fail the test with its output unless it exits 0. Returns its stdout."""
    result = subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout
