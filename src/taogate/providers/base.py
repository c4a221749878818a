"""The provider seam: one method that fetches a batch of items with one credential."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from taogate._credentials import DEFAULT_EGRESS, IP_QPS, Credential, Egress
from taogate._errors import ItemUnreadable
from taogate._model import Item

__all__ = [
    "DEFAULT_EGRESS",
    "IP_QPS",
    "Answer",
    "Credential",
    "Egress",
    "Provider",
    "split_answer",
]

#: What a call answers for one id: its item, or why the item it got cannot be used.
Answer = Item | ItemUnreadable


def split_answer(
    answer: Mapping[str, Answer],
) -> tuple[dict[str, Item], dict[str, ItemUnreadable]]:
    """A call's answer as the items found and the ids whose item could not be used."""
    items: dict[str, Item] = {}
    unreadable: dict[str, ItemUnreadable] = {}
    for num_iid, value in answer.items():
        if isinstance(value, Item):
            items[num_iid] = value
        else:
            unreadable[num_iid] = value
    return items, unreadable


@runtime_checkable
class Provider(Protocol):
    """Fetches up to ``max_batch`` items in one upstream call.

    ``fetch`` returns the items the upstream answered, keyed by the requested id; an id missing
    from the result was not found. An id whose item was in the answer but cannot be used maps
    to an :class:`taogate.ItemUnreadable`: that id fails alone, the others are served. Failures
    of the whole call raise :class:`taogate.UpstreamError` subclasses.
    """

    @property
    def max_batch(self) -> int: ...

    async def fetch(self, ids: Sequence[str], credential: Credential) -> Mapping[str, Answer]: ...

    async def aclose(self) -> None: ...
