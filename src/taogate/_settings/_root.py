"""The settings as a whole: the sections together, the checks across them, and the values the
library takes built from them (credentials, egresses, the redactor)."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from taogate._credentials import DEFAULT_EGRESS, IP_QPS, Account, Credential, Egress
from taogate._masking import Redactor, mask_id, mask_secret, mask_url, url_passwords
from taogate._settings._sections import (
    CacheSettings,
    DegradeSettings,
    JobsSettings,
    RedisSettings,
    ServerSettings,
    SimSettings,
)
from taogate._settings._upstream import (
    AccountSettings,
    CredentialSettings,
    EgressSettings,
    LimitsSettings,
    SecretsSettings,
    UpstreamSettings,
)

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Everything taogate reads from ``taogate.toml`` and ``TAOGATE_*`` variables."""

    model_config = SettingsConfigDict(
        env_prefix="TAOGATE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    upstream: UpstreamSettings = Field(default_factory=UpstreamSettings)
    credentials: list[CredentialSettings] = Field(default_factory=list)
    accounts: list[AccountSettings] = Field(default_factory=list)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    degrade: DegradeSettings = Field(default_factory=DegradeSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    egress: list[EgressSettings] = Field(default_factory=list)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file, which load_settings passes as init values.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _names_consistent(self) -> Self:
        keys = [c.app_key for c in self.credentials]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"app_key listed twice: {', '.join(mask_id(k) for k in duplicates)}")
        egress_names = [e.name for e in self.egress]
        if len(set(egress_names)) != len(egress_names):
            raise ValueError("egress name listed twice")
        for c in self.credentials:
            if c.egress is not None and c.egress not in egress_names:
                who = mask_id(c.app_key)
                raise ValueError(f"credential {who} names unknown egress {c.egress!r}")
        account_names = [a.name for a in self.accounts]
        if len(set(account_names)) != len(account_names):
            raise ValueError("account name listed twice")
        for c in self.credentials:
            if c.account is not None and c.account not in account_names:
                who = mask_id(c.app_key)
                raise ValueError(
                    f"credential {who} names unknown account {c.account!r}; "
                    f"add [[accounts]] name = {c.account!r}"
                )
        for app_key in self.sim.keys:
            if app_key not in keys:
                raise ValueError(f"[sim.keys] names {mask_id(app_key)}, which is no credential")
        return self

    @model_validator(mode="after")
    def _degrade_fits_cache(self) -> Self:
        wanted = self.degrade.max_age_s
        if wanted is None:
            return self
        low, high = self.cache.max_age_s, self.cache.max_age_s + self.cache.max_stale_s
        if not low <= wanted <= high:
            raise ValueError(
                f"degrade.max_age_s must be between [cache] max_age_s ({low:g}) and what the "
                f"cache keeps, max_age_s + max_stale_s ({high:g}); it is {wanted:g}"
            )
        return self

    @property
    def degraded_max_age_s(self) -> float:
        """How old an answer degraded mode serves as fresh (``[degrade] max_age_s`` resolved)."""
        if self.degrade.max_age_s is not None:
            return self.degrade.max_age_s
        return self.cache.max_age_s + self.cache.max_stale_s

    def secret_values(self) -> list[str]:
        """Every secret, token and password configured, for redaction (never for display)."""
        values = [c.secret.get_secret_value() for c in self.credentials if c.secret is not None]
        values += [c.token.get_secret_value() for c in self.server.clients if c.token is not None]
        urls = [self.redis.url, *(e.proxy for e in self.egress)]
        values += [p for url in urls if url for p in url_passwords(url)]
        return [v for v in values if v]

    def redactor(self) -> Redactor:
        """What makes upstream text safe to show: every secret above out, cut short."""
        return Redactor(self.secret_values())

    def build_egresses(self) -> list[Egress]:
        """The egresses as the library takes them; one implicit egress when none is set."""
        default_qps = IP_QPS * self.limits.safety_factor
        if not self.egress:
            return [Egress(name=DEFAULT_EGRESS, max_qps=default_qps)]
        return [
            Egress(
                name=e.name,
                max_qps=default_qps if e.max_qps is None else e.max_qps,
                proxy=e.proxy,
                local_address=e.local_address,
            )
            for e in self.egress
        ]

    def build_accounts(self) -> list[Account]:
        """The ``[[accounts]]`` as the library takes them."""
        return [a.to_account() for a in self.accounts]

    def build_credentials(self) -> list[Credential]:
        """The credentials as the library takes them, each on its egress.

        Credentials that name no egress are spread over the configured egresses in turn, so
        that no single calling IP carries them all.
        """
        names = [e.name for e in self.build_egresses()]
        spread = itertools.cycle(names)
        out = []
        for c in self.credentials:
            credential = c.to_credential()
            egress = c.egress if c.egress is not None else next(spread)
            out.append(dataclasses.replace(credential, egress=egress))
        return out

    def masked(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked, for ``taogate config check``."""
        data = self.model_dump(mode="json")
        for raw, cred in zip(data["credentials"], self.credentials, strict=True):
            assert cred.secret is not None
            raw["secret"] = mask_secret(cred.secret.get_secret_value())
        for raw, client in zip(data["server"]["clients"], self.server.clients, strict=True):
            assert client.token is not None
            raw["token"] = mask_secret(client.token.get_secret_value())
        if self.redis.url:
            data["redis"]["url"] = mask_url(self.redis.url)
        for raw in data["egress"]:
            if raw.get("proxy"):
                raw["proxy"] = mask_url(raw["proxy"])
        return data
