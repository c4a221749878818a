"""A scripted in-memory provider: the declared seam for unit tests of the pipeline.

``FakeProvider`` answers from a dict of items, records every call, and can be told to fail
the next calls (``fail_next``), to refuse given ids as bad requests, to answer given ids with
an item it cannot read (``unreadable``), or to hold calls until a gate opens, so tests can
drive the dispatcher without a network or a clock of their own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from taogate._errors import ItemUnreadable, UpstreamBadRequest
from taogate._model import FinalPriceBasis, Item
from taogate.providers.base import Answer, Credential, split_answer

__all__ = ["FakeCall", "FakeProvider", "items_only", "make_item"]


def items_only(answer: Mapping[str, Answer]) -> dict[str, Item]:
    """The items of a provider's answer; raises the first :class:`ItemUnreadable` in it."""
    items, unreadable = split_answer(answer)
    for error in unreadable.values():
        raise error
    return items


def make_item(num_iid: str, price: str = "9.90") -> Item:
    """A plain item with one price everywhere."""
    money = Decimal(price)
    return Item(
        num_iid=num_iid,
        title=f"item {num_iid}",
        shop="fake shop",
        reserve_price=money,
        zk_final_price=money,
        final_price=money,
        final_price_basis=FinalPriceBasis.DISCOUNT,
    )


@dataclass(frozen=True, slots=True)
class FakeCall:
    """One recorded call: the ids asked for and the app key used."""

    ids: tuple[str, ...]
    app_key: str


@dataclass(eq=False)
class FakeProvider:
    """Answers ``fetch`` from ``items``; ids not in it are "not found"."""

    items: dict[str, Item] = field(default_factory=dict)
    max_batch: int = 40
    bad_ids: set[str] = field(default_factory=set)
    #: ids whose item the answer holds but cannot be used (answered with ItemUnreadable)
    unreadable: set[str] = field(default_factory=set)
    calls: list[FakeCall] = field(default_factory=list)
    gate: asyncio.Event | None = None
    #: set when a call starts (tests clear it to wait for the next call)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    _failures: deque[BaseException] = field(default_factory=deque)
    closed: bool = False

    @classmethod
    def with_ids(cls, ids: Iterable[str], **kw: object) -> FakeProvider:
        return cls(items={i: make_item(i) for i in ids}, **kw)  # type: ignore[arg-type]

    def fail_next(self, *errors: BaseException) -> None:
        """The next calls raise these errors, one each, in order."""
        self._failures.extend(errors)

    @property
    def ids_fetched(self) -> list[str]:
        return [i for call in self.calls for i in call.ids]

    async def fetch(self, ids: Sequence[str], credential: Credential) -> Mapping[str, Answer]:
        self.calls.append(FakeCall(tuple(ids), credential.app_key))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)
        if self._failures:
            raise self._failures.popleft()
        bad = [i for i in ids if i in self.bad_ids]
        if bad:
            raise UpstreamBadRequest(
                "Invalid Arguments", ids=ids, code=41, sub_code="isv.invalid-parameter"
            )
        answer: dict[str, Answer] = {i: self.items[i] for i in ids if i in self.items}
        for i in ids:
            if i in self.unreadable:
                answer[i] = ItemUnreadable(i, "zk_final_price: out of bounds")
        return answer

    async def aclose(self) -> None:
        self.closed = True
