"""What the upstream is called with: a credential (app key and secret, with its limits), the
account it belongs to (a promoter account limiting all its keys together) and an egress (the way
out: a proxy or a local address, with the calls it carries per second).

Base types: the settings build them, the credential pool paces them, the providers sign and
send with them; they import nothing of those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal

from taogate._masking import mask_id, mask_secret, mask_url

__all__ = ["ACCOUNT_QPS", "DEFAULT_EGRESS", "IP_QPS", "Account", "Credential", "Egress"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """An app key and its secret, with the limits the pool applies to it.

    The secret is held but never shown: ``repr`` and ``masked`` give recognisable, safe forms.
    """

    app_key: str
    secret: str = field(repr=False)
    qps: float = 10.0
    daily_budget: int | None = None
    cost_per_call: Decimal = Decimal(0)
    egress: str | None = None
    #: the name of the :class:`Account` whose limit this key shares with its other keys
    account: str | None = None

    @property
    def masked(self) -> str:
        """The app key as logs, metrics and errors show it."""
        return mask_id(self.app_key)

    def __repr__(self) -> str:
        return (
            f"Credential(app_key={self.masked!r}, secret={mask_secret(self.secret)!r}, "
            f"qps={self.qps:g}, daily_budget={self.daily_budget}, "
            f"cost_per_call={self.cost_per_call}, egress={self.egress!r}, account={self.account!r})"
        )


#: API calls per second a promoter (淘宝联盟) account is reported to allow over all its app keys.
ACCOUNT_QPS = 40.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """A promoter account: several app keys whose calls together stay under ``qps``.

    Over it the platform answers code 15 / ``9100`` (docs/limits.md).
    """

    name: str
    qps: float = ACCOUNT_QPS

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an account needs a name")
        if not 0 < self.qps < math.inf:
            raise ValueError("an account's qps must be a finite number above 0")


#: The egress of credentials that name none: the host's own address, no proxy.
DEFAULT_EGRESS = "default"
#: Calls per second the platform's risk control is known to watch per calling IP.
IP_QPS = 100.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Egress:
    """A way out to the upstream: an HTTP(S) proxy, or a local address to bind, or neither.

    ``max_qps`` caps the calls of every credential on it together (the platform watches the
    calling IP as well as the key). The proxy URL may carry a password: ``repr`` masks it.
    """

    name: str = DEFAULT_EGRESS
    max_qps: float = IP_QPS * 0.8
    proxy: str | None = None
    local_address: str | None = None

    def __post_init__(self) -> None:
        if self.max_qps <= 0:
            raise ValueError("max_qps must be above 0")

    def __repr__(self) -> str:
        proxy = None if self.proxy is None else mask_url(self.proxy)
        return (
            f"Egress(name={self.name!r}, max_qps={self.max_qps:g}, proxy={proxy!r}, "
            f"local_address={self.local_address!r})"
        )
