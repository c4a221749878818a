"""Item id validation: ids are checked before anything is sent upstream."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from taogate._errors import BatchTooLarge, InvalidItemId, InvalidRequest

__all__ = ["DEFAULT_ID_PATTERN", "IdPolicy"]

DEFAULT_ID_PATTERN = r"[0-9A-Za-z_-]{1,20}"
#: the most characters an id counts for in body-size bounds (a pattern such as ``\d+`` sets
#: no bound of its own)
ID_LENGTH_BOUND = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class IdPolicy:
    """What an item id may look like. The default admits numeric and opaque (new-style) ids."""

    pattern: str = DEFAULT_ID_PATTERN
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(self.pattern))

    def check(self, num_iid: str) -> str:
        """Return ``num_iid`` if it is valid, else raise :class:`InvalidItemId`."""
        if not isinstance(num_iid, str):
            raise InvalidItemId(repr(num_iid), "an id must be a string")
        if self._regex.fullmatch(num_iid) is None:
            raise InvalidItemId(num_iid, f"does not match {self.pattern}")
        return num_iid

    @property
    def max_length(self) -> int:
        """The longest id the pattern admits, in characters, at most ``ID_LENGTH_BOUND``: what
        bounds the size of a body of ids."""
        parser = importlib.import_module("re._parser")  # the stdlib's own width computation
        _, high = parser.parse(self.pattern).getwidth()
        return min(int(high), ID_LENGTH_BOUND)

    def check_batch(self, ids: Iterable[str], max_batch: int) -> list[str]:
        """Validate every id and the batch size; duplicates are kept in order once."""
        seen = dict.fromkeys(self.check(i) for i in ids)
        if not seen:
            raise InvalidRequest("a batch needs at least one id")
        if len(seen) > max_batch:
            raise BatchTooLarge(len(seen), max_batch)
        return list(seen)
