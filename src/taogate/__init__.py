"""taogate: a gateway that makes a scarce, rate-limited commerce API quota go as far as it can.

The public face. Implementation lives in private modules; integrations in subpackages
(``taogate.providers``, ``taogate.testing``). Importing taogate opens no connection.
"""

import importlib.metadata as _metadata

from taogate._breaker import BreakerState
from taogate._credentials import Account, Credential, Egress
from taogate._dispatch import Priority
from taogate._errors import (
    BatchTooLarge,
    ConfigurationError,
    CredentialInvalid,
    DeadlineExceeded,
    EgressUnreachable,
    InvalidItemId,
    InvalidRequest,
    IpNotWhitelisted,
    ItemNotFound,
    ItemUnreadable,
    LimitScope,
    LookupFailed,
    NoCredentialAvailable,
    Overloaded,
    ProtocolMismatch,
    RateLimited,
    TaogateError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamTransient,
    UpstreamUnavailable,
)
from taogate._gateway import Gateway
from taogate._gateway_stats import GatewayStats
from taogate._ids import IdPolicy
from taogate._lookup import LookupPolicy
from taogate._masking import mask_id, mask_secret
from taogate._model import FinalPriceBasis, Item, Lookup, Source
from taogate._service import Service
from taogate._settings import Settings, load_settings
from taogate.providers.base import Provider

try:
    __version__ = _metadata.version("taogate")
except (
    _metadata.PackageNotFoundError
):  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

__all__ = [
    "Account",
    "BatchTooLarge",
    "BreakerState",
    "ConfigurationError",
    "Credential",
    "CredentialInvalid",
    "DeadlineExceeded",
    "Egress",
    "EgressUnreachable",
    "FinalPriceBasis",
    "Gateway",
    "GatewayStats",
    "IdPolicy",
    "InvalidItemId",
    "InvalidRequest",
    "IpNotWhitelisted",
    "Item",
    "ItemNotFound",
    "ItemUnreadable",
    "LimitScope",
    "Lookup",
    "LookupFailed",
    "LookupPolicy",
    "NoCredentialAvailable",
    "Overloaded",
    "Priority",
    "ProtocolMismatch",
    "Provider",
    "RateLimited",
    "Service",
    "Settings",
    "Source",
    "TaogateError",
    "UpstreamBadRequest",
    "UpstreamError",
    "UpstreamTransient",
    "UpstreamUnavailable",
    "__version__",
    "load_settings",
    "mask_id",
    "mask_secret",
]
