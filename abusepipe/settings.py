"""Configuration, built once at the edge (CLI) from the environment and arguments; frozen afterwards."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from abusepipe.errors import ConfigError
from parsers.limits import DEFAULT_LIMITS, ParseLimits
from sinks.kafka_config import KafkaSettings, TopicNames

if TYPE_CHECKING:
    from blocklist.policy import ListingPolicy
    from ingest.enrich import Enrichment
    from notify.contacts import ContactSources


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "abusepipe"


def settings_file() -> Path:
    """`ABUSEPIPE_CONFIG`, else `abusepipe.toml` in the current directory (read only when present)."""
    return Path(os.environ.get("ABUSEPIPE_CONFIG", "abusepipe.toml"))


class Settings(BaseSettings):
    """Environment (`ABUSEPIPE_*`) overrides the settings file, which overrides the defaults."""

    model_config = SettingsConfigDict(env_prefix="ABUSEPIPE_", frozen=True, extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="SQLAlchemy URL; default: a SQLite file in the data directory"
    )
    data_dir: Path = Field(default_factory=default_data_dir)

    trusted_networks: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="CIDRs of the operator's own relays, trusted in the Received walk"
    )
    max_message_bytes: int = DEFAULT_LIMITS.max_message_bytes
    max_parts: int = DEFAULT_LIMITS.max_parts
    max_depth: int = DEFAULT_LIMITS.max_depth
    max_decoded_bytes: int = DEFAULT_LIMITS.max_decoded_bytes
    max_xml_bytes: int = DEFAULT_LIMITS.max_xml_bytes

    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; when set, `ingest` publishes to Kafka"
    )
    kafka_topic_reports: str = "abuse.reports.v1"
    kafka_topic_evidence: str = "abuse.evidence.v1"
    kafka_topic_deadletter: str = "abuse.deadletter.v1"
    kafka_group: str = Field(default="abusepipe-store", description="consumer group of `consume`")
    kafka_client_id: str = "abusepipe"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_session_timeout_ms: int = Field(default=45_000, ge=6_000, le=300_000)
    kafka_delivery_timeout: float = Field(
        default=120.0, gt=0, description="seconds the broker may take to acknowledge (retries included)"
    )

    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: Literal["ssl", "starttls", "plain"] = "ssl"
    imap_username: str | None = None
    imap_password: SecretStr | None = None
    imap_ca_file: Path | None = None
    imap_folders: Annotated[tuple[str, ...], NoDecode] = ("INBOX",)
    imap_mark: Literal["move", "flag"] = "move"
    imap_processed_folder: str = "Processed"
    imap_rejected_folder: str = "Rejected"
    imap_poll_interval: float = Field(default=60.0, gt=0)
    imap_idle: bool = True
    imap_auth: Literal["password", "xoauth2", "oauthbearer"] = "password"

    oauth2_token_command: str | None = Field(
        default=None, description="a program that prints an OAuth2 access token (Google, anything else)"
    )
    oauth2_token_timeout: float = Field(default=30.0, gt=0)
    oauth2_tenant_id: str | None = Field(default=None, description="Microsoft Entra ID tenant (app-only)")
    oauth2_client_id: str | None = None
    oauth2_client_secret: SecretStr | None = None
    oauth2_certificate: Path | None = Field(
        default=None, description="PEM with the app's private key and certificate (instead of a secret)"
    )
    oauth2_authority: str = "https://login.microsoftonline.com"
    oauth2_ca_file: Path | None = None

    console_listen: str = "127.0.0.1:8080"
    console_tls_cert: Path | None = None
    console_tls_key: Path | None = None
    console_forwarded_allow_ips: str | None = Field(
        default=None, description="proxies whose X-Forwarded-* headers are trusted (default: none)"
    )

    graph_mailbox: str | None = Field(
        default=None, description="the abuse mailbox read through Microsoft Graph"
    )
    graph_url: str = "https://graph.microsoft.com/v1.0"
    graph_folder: str = "inbox"
    graph_processed_folder: str = "Processed"
    graph_rejected_folder: str = "Rejected"
    graph_poll_interval: float = Field(default=60.0, gt=0)

    smtp_listen: str = "127.0.0.1:2525"
    smtp_recipients: dict[str, str] = Field(
        default_factory=dict, description='accepted addresses and their routes: {"abuse@example.net": "auto"}'
    )
    smtp_hostname: str | None = None
    smtp_tls_cert: Path | None = None
    smtp_tls_key: Path | None = None
    smtp_require_starttls: bool = False

    blocklist_enabled: bool = Field(
        default=True, description="re-evaluate the offenders each stored batch touched (the listing policy)"
    )
    blocklist_kinds: Annotated[tuple[str, ...], NoDecode] = Field(
        default=("ip", "network", "tenant"),
        description="kinds the policy lists; add from_domain, mail_from_domain, dkim_domain, url_domain",
    )
    blocklist_reporters: int = Field(default=3, ge=1, description="distinct junk reporters in the window")
    blocklist_traps: int = Field(default=2, ge=1, description="distinct spam traps in the window")
    blocklist_window_hours: float = Field(default=24.0, gt=0)
    blocklist_network_ips: int = Field(default=4, ge=1, description="listed IPs that list their /24 or /48")
    blocklist_ttl_hours: float = Field(default=24.0, gt=0, description="from the last evidence")
    blocklist_relist_factor: int = Field(default=4, ge=1, description="the TTL's factor on each relisting")
    blocklist_relist_window_days: float = Field(default=30.0, ge=0)
    blocklist_max_ttl_days: float = Field(default=30.0, gt=0)
    blocklist_allow: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="never listed: CIDRs, domains (and their subdomains), tenant GUIDs"
    )
    portal_url: str = Field(
        default="http://127.0.0.1:8081/",
        description="the delist portal's public URL, named in every rejection and TXT record",
    )
    asn_db: Path | None = Field(
        default=None, description="a MaxMind-format ASN database (DB-IP ASN Lite, IPinfo Lite...)"
    )
    country_db: Path | None = Field(
        default=None, description="a MaxMind-format country database (DB-IP Country Lite, IPinfo Lite...)"
    )
    contact_overrides: dict[str, str] = Field(
        default_factory=dict, description='abuse contacts by CIDR, asked first: {"192.0.2.0/24": "abuse@x"}'
    )
    abusix_zone: str = Field(
        default="abuse-contacts.abusix.zone", description="Abusix's abuse-contact DNS zone (empty: not asked)"
    )
    rdap_url: str = Field(
        default="https://rdap.org/", description="an RDAP base that redirects (empty: not asked)"
    )
    dns_server: str | None = Field(
        default=None, description="HOST[:PORT] to ask (default: the system's resolver)"
    )
    contact_ttl_days: float = Field(default=7.0, gt=0, description="how long a found contact is kept")
    notify_window_days: float = Field(
        default=7.0, gt=0, description="reports older than this are not sent on"
    )
    notify_interval_hours: float = Field(
        default=24.0, gt=0, description="at most one mail per contact this often"
    )
    notify_max_arf: int = Field(default=5, ge=1, description="more new reports than this go as one digest")
    notify_opt_out: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="addresses or domains never notified"
    )
    notify_microsoft_junk: str = "junk@office365.microsoft.com"
    notify_microsoft_phish: str = "phish@office365.microsoft.com"
    notify_every: float = Field(
        default=3600.0, gt=0, description="seconds between notify rounds (without --once)"
    )
    portal_listen: str = "127.0.0.1:8081"
    portal_workers: int = Field(
        default=1, ge=1, le=64, description="processes serving the portal (one per core)"
    )
    portal_forwarded_allow_ips: str | None = Field(
        default=None, description="proxies whose X-Forwarded-* headers are trusted (default: none)"
    )
    portal_secret: SecretStr | None = Field(
        default=None, description="signs the portal's CSRF tokens (default: random at each start)"
    )
    portal_link_minutes: float = Field(default=30.0, gt=0, le=24 * 60, description="a link's lifetime")
    portal_self_delistings: int = Field(
        default=2, ge=0, description="self-service delistings of one IP per 30 days before review"
    )
    portal_client_requests: int = Field(default=10, ge=1, description="requests per client address per hour")
    portal_email_requests: int = Field(default=5, ge=1, description="requests per e-mail address per day")
    portal_ip_requests: int = Field(default=5, ge=1, description="requests per listed IP per day")
    mail_relay: str | None = Field(default=None, description="host:port of the relay for outgoing mail")
    mail_from: str = Field(default="abusepipe@localhost", description="the From of outgoing mail")
    mail_starttls: bool = Field(default=False, description="require STARTTLS with the relay")
    mail_username: str | None = None
    mail_password: SecretStr | None = None
    mail_ca_file: str | None = Field(default=None, description="a CA to trust for the relay's certificate")
    mail_retry_seconds: float = Field(
        default=60.0, gt=0, description="the first retry after a failed delivery (doubling, up to an hour)"
    )
    policy_listen: str = "127.0.0.1:10040"
    policy_refresh: float = Field(
        default=5.0, gt=0, le=10, description="seconds between the policy server's looks at the store"
    )

    @field_validator(
        "trusted_networks",
        "imap_folders",
        "blocklist_kinds",
        "blocklist_allow",
        "notify_opt_out",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        """`a,b` (or a JSON list) in the environment; a list in the settings file."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except ValueError as exc:
                    raise ValueError(f"not a JSON list: {exc}") from exc
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=settings_file()),
            file_secret_settings,
        )

    def store_url(self) -> str:
        if self.database_url is not None and self.database_url.get_secret_value().strip():
            return self.database_url.get_secret_value().strip()
        return f"sqlite:///{self.data_dir / 'abusepipe.sqlite3'}"

    def kafka(self) -> KafkaSettings | None:
        """The Kafka connection, or None for the embedded path (straight into the store)."""
        if not self.kafka_bootstrap:
            return None
        servers = tuple(s.strip() for s in self.kafka_bootstrap.split(",") if s.strip())
        if not servers:
            raise ConfigError("kafka_bootstrap: no host:port given")
        return KafkaSettings(
            bootstrap=servers,
            topics=TopicNames(
                reports=self.kafka_topic_reports,
                evidence=self.kafka_topic_evidence,
                deadletter=self.kafka_topic_deadletter,
            ),
            group=self.kafka_group,
            client_id=self.kafka_client_id,
            security_protocol=self.kafka_security_protocol,
            sasl_mechanism=self.kafka_sasl_mechanism,
            sasl_username=self.kafka_sasl_username,
            sasl_password=self.kafka_sasl_password,
            ssl_cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
            session_timeout_ms=self.kafka_session_timeout_ms,
            delivery_timeout=self.kafka_delivery_timeout,
        )

    def contact_sources(self) -> ContactSources:
        from notify.contacts import ContactSources  # noqa: PLC0415

        server = None
        if self.dns_server:
            text = self.dns_server.strip()
            if text.startswith("["):  # [2001:db8::53]:5353
                host, _, port = text[1:].partition("]")
                port = port.removeprefix(":") or "53"
            elif text.count(":") == 1:
                host, _, port = text.partition(":")
            else:
                host, port = text, "53"
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"ABUSEPIPE_DNS_SERVER {self.dns_server!r}: give HOST or HOST:PORT")
            server = (host, int(port))
        return ContactSources(
            overrides=ContactSources.parse_overrides(self.contact_overrides),
            abusix_zone=self.abusix_zone,
            rdap_url=self.rdap_url,
            dns_server=server,
            ttl=timedelta(days=self.contact_ttl_days),
        )

    def enrichment(self) -> Enrichment | None:
        """The enrichment databases, checked here so that a wrong path is one line at start."""
        from ingest.enrich import Enrichment, enricher_for  # noqa: PLC0415

        enrichment = Enrichment(self.asn_db, self.country_db)
        if not enrichment:
            return None
        enricher_for(enrichment)  # opens both (kept for this process): a ConfigError naming the setting
        return enrichment

    def listing_policy(self) -> ListingPolicy:
        from blocklist.policy import ListingPolicy  # noqa: PLC0415 (only the commands that list need it)

        return ListingPolicy.from_settings(
            kinds=self.blocklist_kinds,
            reporters=self.blocklist_reporters,
            traps=self.blocklist_traps,
            window_hours=self.blocklist_window_hours,
            network_ips=self.blocklist_network_ips,
            ttl_hours=self.blocklist_ttl_hours,
            relist_factor=self.blocklist_relist_factor,
            relist_window_days=self.blocklist_relist_window_days,
            max_ttl_days=self.blocklist_max_ttl_days,
            allow=self.blocklist_allow,
        )

    def parse_limits(self) -> ParseLimits:
        return ParseLimits(
            max_message_bytes=self.max_message_bytes,
            max_parts=self.max_parts,
            max_depth=self.max_depth,
            max_decoded_bytes=self.max_decoded_bytes,
            max_xml_bytes=self.max_xml_bytes,
        )
