"""Loading: the TOML file and the ``TAOGATE_*`` environment, read once into :class:`Settings`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from taogate._errors import ConfigurationError
from taogate._settings._root import Settings

__all__ = ["load_settings"]


def _format_location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read ``path`` (TOML) and the ``TAOGATE_*`` environment into :class:`Settings`.

    Raises :class:`ConfigurationError` naming the first wrong field; no secret is in the message.
    """
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            with Path(path).open("rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigurationError(f"{source}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"{source}: not valid TOML: {exc}") from None
    try:
        return Settings(**data)
    except SettingsError as exc:  # a TAOGATE_* value that is not what it should be (bad JSON)
        # the message names the variable's field; the value itself may hold a secret
        name = str(exc).split('"')[1] if str(exc).count('"') >= 2 else "a TAOGATE_* variable"
        raise ConfigurationError(
            f"environment: {name}: not a valid value (complex values are JSON)", field=name
        ) from None
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = _format_location(tuple(first["loc"]))
        message = first["msg"].removeprefix("Value error, ")
        more = exc.error_count() - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ConfigurationError(f"{source}: {where}: {message}{suffix}", field=where) from None
