"""The sections of the settings about the upstream: which API, the credentials and their
secrets, the egresses calls leave through, and how close to the platform's limits to run."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator

from taogate._credentials import ACCOUNT_QPS, Account, Credential
from taogate._errors import ConfigurationError
from taogate._ids import DEFAULT_ID_PATTERN, IdPolicy
from taogate._masking import mask_url
from taogate._secrets import read_secret_file
from taogate._settings._sections import Section, resolve_secret

__all__ = [
    "AccountSettings",
    "CredentialSettings",
    "EgressSettings",
    "LimitsSettings",
    "SecretsSettings",
    "UpstreamSettings",
]

SignMethod = Literal["md5", "hmac", "hmac-sha256"]


class UpstreamSettings(Section):
    """``[upstream]``: which API taogate calls and how."""

    kind: Literal["top", "reseller"] = "top"
    url: str = "https://eco.taobao.com/router/rest"
    method: Literal["taobao.tbk.item.info.get", "taobao.tbk.item.info.upgrade.get"] = (
        "taobao.tbk.item.info.get"
    )
    sign_method: SignMethod = "hmac-sha256"
    simplify: bool = False
    timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    max_connections: int = Field(default=64, ge=1)
    #: The largest upstream answer read, in bytes; a larger one is a transient failure.
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    id_pattern: str = DEFAULT_ID_PATTERN
    #: Extra business parameters sent with every call (``platform``, ``biz_scene_id``, ...).
    params: dict[str, str] = Field(default_factory=dict)
    #: Calls per second of ``method`` over every key together, if the platform's cap on the
    #: API is known; ``None``: no pacing, only the pauses its bans ask for (docs/limits.md).
    method_qps: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @field_validator("id_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str) -> str:
        try:
            IdPolicy(pattern=value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @property
    def id_policy(self) -> IdPolicy:
        return IdPolicy(pattern=self.id_pattern)


class CredentialSettings(Section):
    """``[[credentials]]``: one app key; its secret inline, from ``secret_env`` or ``secret_file``.

    ``secret_file`` is a file a secret store mounts (Vault agent, the Secrets Store CSI driver,
    a Kubernetes Secret volume); it is read at start and again whenever it changes, so the
    secret can be rotated without a restart (see ``[secrets]``).
    """

    app_key: str = Field(min_length=1)
    secret: SecretStr | None = None
    secret_env: str | None = None
    secret_file: Path | None = None
    qps: float = Field(default=10.0, gt=0)
    daily_budget: int | None = Field(default=None, ge=1)
    cost_per_call: Decimal = Field(default=Decimal(0), ge=0)
    egress: str | None = None
    #: the ``[[accounts]]`` entry this key belongs to (its calls count against the account too)
    account: str | None = None

    @model_validator(mode="after")
    def _secret_given(self) -> Self:
        given = (self.secret, self.secret_env, self.secret_file)
        if sum(v is not None for v in given) != 1:
            raise ValueError("give exactly one of secret, secret_env or secret_file")
        if self.secret_file is None:
            secret = resolve_secret(self.secret, self.secret_env, "secret")
        else:
            try:  # the message names the file, never its content
                secret = SecretStr(read_secret_file(self.secret_file))
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
        object.__setattr__(self, "secret", secret)
        return self

    def to_credential(self) -> Credential:
        assert self.secret is not None  # resolved by the validator
        return Credential(
            app_key=self.app_key,
            secret=self.secret.get_secret_value(),
            qps=self.qps,
            daily_budget=self.daily_budget,
            cost_per_call=self.cost_per_call,
            egress=self.egress,
            account=self.account,
        )


class AccountSettings(Section):
    """``[[accounts]]``: a promoter (淘宝联盟) account whose app keys share one limit.

    The platform limits an account's API calls over all its apps (reportedly 40 a second) and
    answers code 15 / ``9100`` over it; keys added under one account add nothing past it.
    """

    name: str = Field(min_length=1)
    #: API calls per second of all the account's keys together (paced at ``safety_factor``)
    qps: float = Field(default=ACCOUNT_QPS, gt=0, allow_inf_nan=False)

    def to_account(self) -> Account:
        return Account(name=self.name, qps=self.qps)


class EgressSettings(Section):
    """``[[egress]]``: a way out to the upstream (an HTTP proxy or a local address)."""

    name: str = Field(min_length=1)
    #: ``http://[user:password@]host:port``: calls go through this HTTP(S) proxy
    proxy: str | None = None
    #: a local IP address to bind outgoing connections to (one of the host's addresses)
    local_address: str | None = None
    #: calls per second of all credentials on this egress together; default 100 (what the
    #: platform's risk control watches per calling IP) × ``[limits] safety_factor``
    max_qps: float | None = Field(default=None, gt=0)

    def __repr__(self) -> str:
        proxy = mask_url(self.proxy) if self.proxy else None
        return (
            f"EgressSettings(name={self.name!r}, proxy={proxy!r}, "
            f"local_address={self.local_address!r}, max_qps={self.max_qps})"
        )

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// proxy URL")
        return value


class LimitsSettings(Section):
    """``[limits]``: how close to the platform's limits taogate runs, and its deadlines."""

    safety_factor: float = Field(default=0.8, gt=0, le=1)
    batch_window_ms: float = Field(default=10.0, ge=0)
    deadline_s: float = Field(default=3.0, gt=0)


class SecretsSettings(Section):
    """``[secrets]``: how ``secret_file`` secrets are kept current."""

    #: Seconds between checks of every ``secret_file`` for a new secret; 0 checks only on
    #: SIGHUP (``taogate serve``), ``Gateway.reload_secrets()`` and a refused credential.
    poll_s: float = Field(default=2.0, ge=0)
