"""The one place that reads the environment: ports, paths, topics and tenancy.

Every process of the stack builds a :class:`Settings` with :func:`load` once and passes
it down. Each field can be overridden by the environment variable named in its
metadata (``TAWAG_<FIELD>`` in upper case), so a test can run a second stack on other
ports and another data folder without touching any file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["Settings", "load", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str) -> str:
    return "TAWAG_" + name.upper()


@dataclass(frozen=True)
class Settings:
    """Configuration of one Tawag stack (all services on one machine by default)."""

    data_dir: Path = REPO_ROOT / "var"
    """Every piece of state (Kafka log, chdb store, recordings, logs, PIDs) lives here."""
    libs_dir: Path = REPO_ROOT / "var" / "kafka-libs"
    """Downloaded Kafka jars; outside ``data_dir`` so a wiped or test stack reuses them."""

    # --- tenancy -----------------------------------------------------------------------
    tenant: str = "acme"
    """Tenant of calls whose SIP domain is not in ``tenant_domains``."""
    sip_domain: str = "pbx.test"
    """SIP domain (digest realm) that the local edge serves for ``tenant``."""
    default_country: str = "RU"
    """ISO country used to read national numbers when normalising to E.164."""

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_version: str = "4.1.1"
    """Pinned Apache Kafka (org.apache.kafka:kafka_2.13) fetched from Maven Central."""
    kafka_heap: str = "512m"
    topic_call_events: str = "tawag.call-events"
    topic_cdrs: str = "tawag.cdrs"
    topic_dead_letter: str = "tawag.dead-letter"
    topic_agent_states: str = "tawag.agent-states"
    """Agent state segments, key ``tenant:agent`` (not compacted: many rows per key)."""
    topic_agent_stats: str = "tawag.agent-stats"
    """Per-agent interval statistics, key ``tenant:agent``."""
    topic_callbacks: str = "tawag.callbacks"
    """Missed-call callback item revisions, key ``tenant:client``."""
    topic_provisioning: str = "tawag.provisioning"
    """Compacted, key = tenant: the last applied provisioning, restored into a new Kamailio."""
    topic_partitions: int = 4

    # --- stream processing ---------------------------------------------------------
    agent_wrap_up_s: int = 0
    """After-call work counted as wrap-up after each call (0: agents are free at once)."""
    agent_state_retention_days: int = 2
    """History the agent-state fold keeps; older late events are ignored."""
    callback_retention_days: int = 30
    """How long a client's calls are kept by the callback fold (open items are never dropped)."""

    # --- SIP edge ----------------------------------------------------------------------
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    kamailio_http_port: int = 5071
    """Kamailio's JSON-RPC over HTTP (POST /RPC)."""
    evapi_port: int = 8448
    rtpengine_ng_port: int = 2223
    rtpengine_cli_port: int = 2224
    rtp_port_min: int = 30000
    rtp_port_max: int = 30999
    no_answer_timeout: int = 20
    """Seconds an INVITE may ring before the edge gives up with 408 (tm fr_inv_timer)."""
    sip_auth: bool = True
    """Digest authentication (HA1 from provisioning) for extensions' REGISTER and INVITE."""
    provisioning_file: Path = REPO_ROOT / "sip-edge" / "provisioning.example.toml"
    """Tenants, extensions, groups, DIDs, forwarding and trunk applied when the edge starts."""
    max_call_duration_s: int = 7200
    """A dialog older than this is ended by the edge (BYE to both sides)."""
    pike_density: int = 30
    """Requests per source and 2 s before the edge bans it for a while (flood protection)."""

    # --- warehouse ---------------------------------------------------------------------
    warehouse_mode: str = "embedded"
    """``embedded`` (chdb, owned by the warehouse process) or ``server`` (ClickHouse)."""
    warehouse_host: str = "127.0.0.1"
    warehouse_http_port: int = 18123
    """Read-only ClickHouse HTTP interface served by the process that owns chdb."""
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 9000
    """Native protocol port of a ClickHouse server (server mode only)."""
    clickhouse_database: str = "tawag"
    clickhouse_user: str = "default"
    clickhouse_password: str = field(default="", repr=False)

    cdr_retention_days: int = 0
    """CDRs (and agent stats, callbacks) older than this are dropped by TTL; 0 keeps them."""
    call_events_retention_days: int = 0
    """Raw events older than this are dropped by TTL; 0 keeps them (replay needs them)."""

    # --- dashboards --------------------------------------------------------------------
    dashboard_port: int = 8501

    # --- derived paths -----------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def kafka_libs(self) -> Path:
        return self.libs_dir / self.kafka_version

    @property
    def kafka_data(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "chdb"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def dashboard_users_file(self) -> Path:
        """Who may log in to the dashboards (scrypt hashes; see dashboards/auth.py)."""
        return self.data_dir / "dashboard-users.toml"

    @property
    def recordings_wav_dir(self) -> Path:
        return self.recordings_dir / "wav"

    @property
    def kamailio_rpc_url(self) -> str:
        return f"http://{self.sip_host}:{self.kamailio_http_port}/RPC"

    @property
    def warehouse_url(self) -> str:
        return f"http://{self.warehouse_host}:{self.warehouse_http_port}/"

    def tenant_for_domain(self, domain: str | None) -> str:
        """Tenant owning a SIP domain; the local edge serves one tenant for now."""
        return self.tenant


def _coerce(raw: str, typ: object, current: object) -> object:
    if isinstance(current, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, Path):
        return Path(raw).expanduser().resolve()
    return raw


def load(environ: dict[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from defaults, then ``TAWAG_*`` variables, then explicit overrides."""
    environ = os.environ if environ is None else environ
    base = Settings()
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = environ.get(_env(f.name))
        if raw is not None:
            values[f.name] = _coerce(raw, f.type, getattr(base, f.name))
    values.update(overrides)
    return Settings(**values)


def to_environ(settings: Settings) -> dict[str, str]:
    """The ``TAWAG_*`` variables that make a child process load the same settings."""
    return {_env(f.name): str(getattr(settings, f.name)) for f in fields(Settings)}
