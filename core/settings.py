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

from core.tenant_crm import tenant_domains
from core.timezones import tenant_zones

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
    default_time_zone: str = "UTC"
    """IANA zone of a tenant whose provisioning names none (``time_zone`` of
    ``[tenant.<name>]``): its days, hours, intervals and night/weekend flags."""
    business_hours: str = "9-18"
    """Local opening hours ``start-end`` (whole hours): a missed call outside them is
    flagged ``night`` (in the tenant's zone)."""
    business_days: str = "1,2,3,4,5"
    """Local working days (ISO weekdays, 1 = Monday): a missed call on another day is
    flagged ``weekend``."""

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_controller_port: int = 19093
    kafka_version: str = "4.1.1"
    """Pinned Apache Kafka (org.apache.kafka:kafka_2.13) fetched from Maven Central."""
    kafka_heap: str = "512m"
    kafka_metadata_max_age_ms: int = 10_000
    """How often Tawag's Kafka consumers refresh the cluster's metadata. A consumer whose
    first metadata lacked a topic (just created, the broker slow under load) joins its
    group with no partition of it until the next refresh: kafka-python's default of 5
    minutes left a CRM connector not ready for 90 s in a CI run."""
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
    topic_routing: str = "tawag.routing"
    """Compacted, key = the fact (``core.routing``): what routing learns from the streams
    (agents' availability, clients' responsible managers), applied to the edge's htable
    "live" by ``edge.live``."""
    routing_heartbeat_s: float = 1.0
    """How often the stream worker says it is alive on ``topic_routing``; the edge trusts
    its live facts while the last heartbeat is younger than ``routing_stale_s``."""
    routing_stale_s: int = 5
    """Seconds without a routing heartbeat after which the edge routes on provisioning
    alone (static group order, no responsible manager)."""
    topic_partitions: int = 4
    streams_instance_id: str = "streams-1"
    """Kafka static membership id of the Faust worker (``group.instance.id``): a worker
    started again under the same id takes its partitions back at once instead of waiting
    for the broker to expire the dead member's session. Unique per worker; "" turns
    static membership off."""
    warehouse_instance_id: str = "warehouse-1"
    """The same for the warehouse loader's Kafka consumer (kafka-python): a loader killed
    and started again resumes at once instead of ~45 s later. Unique per loader."""
    warehouse_fetch_wait_ms: int = 300
    """How long the broker may hold the loader's fetch to gather more records (up to 256
    KiB): each poll then loads a few hundred records per table in one INSERT instead of a
    handful (an INSERT costs chdb ~15 ms of CPU whatever its size), at the price of up to
    this much delay before a CDR is readable."""
    connectors_instance_id: str = "connectors-1"
    """The same for the CRM connectors worker's consumer. Unique per worker."""

    # --- ingest ------------------------------------------------------------------------
    ingest_spool_max_bytes: int = 256 * 2**20
    """Bytes the ingest bridge's spool may hold on disk (``data_dir/spool``): events wait
    there, fsynced, until Kafka acknowledges them, so a broker outage loses nothing. At
    about 500 bytes an event that is some 500,000 events. Once it is full, new events are
    refused: each is logged and counted (``spool_overflow_total``), and lost."""
    reconcile_interval_s: float = 2.0
    """How often ingest's reconciler compares the calls it saw open with the edge's live
    dialogs (``dlg.list`` over JSON-RPC, ``ingest.reconcile``)."""
    lost_end_grace_s: float = 10.0
    """How long a call must be missing from the edge's live dialogs, while the bridge is
    connected, before the reconciler closes it as ``interrupted`` (its end was lost: the
    edge restarted mid-call). A lost end is closed within this plus
    ``reconcile_interval_s`` of the edge and the bridge being up again; a call older than
    ``max_call_duration_s`` + ``no_answer_timeout`` + this is closed whatever the edge says."""

    # --- stream processing ---------------------------------------------------------
    agent_wrap_up_s: int = 0
    """After-call work counted as wrap-up after each call (0: agents are free at once)."""
    agent_lateness_horizon_s: int = 300
    """Lateness horizon of the agent fold: an event up to this many seconds (event time)
    behind the agent's newest one is folded exactly, whatever the arrival order; finished
    calls before it are let go from the agent's row (streams.folds.agent_state)."""
    agent_late_window_s: int = 3600
    """Beyond the horizon, a late call is still counted into its intervals (without
    rewriting the published timeline) for this long; older late events are dropped,
    logged and counted."""
    agent_row_max_bytes: int = 256_000
    """Size guard of an agent's table row (JSON): above it the row is trimmed, logged and
    counted, so a changelog message never nears Kafka's 1 MB limit."""
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
    hold_music: str = ""
    """A WAV file rtpengine plays to callers waiting in a queue; empty: the built-in
    melody (:mod:`edge.hold_music`, written under the data folder)."""
    max_call_duration_s: int = 7200
    """A call answered longer ago than this is ended by the edge: BYE to both parties,
    ``call.ended`` with reason ``max_duration`` and hangup_by ``system``."""
    pike_density: int = 30
    """Requests per source and 2 s before the edge bans it for a while (flood protection)."""
    evapi_buffer_size: int = 10000
    """Call events the edge keeps (in its shared memory) while no evapi client (the
    ingest bridge) is connected; past this the oldest are dropped and counted in the
    Kamailio statistic ``evapi_buffer_overflow``."""
    evapi_resend: int = 500
    """Events already sent that the edge keeps (within ``evapi_buffer_size``) and sends
    again to an evapi client that connects: what was in flight to a client that died is
    not lost. The bridge drops those it already published (``ingest.repeats``: it reads
    this many of the last events of each partition at start). 0 sends nothing twice."""

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
    """The writer in server mode (migrations, the loader, ``tawag user add``)."""
    clickhouse_password: str = field(default="", repr=False)
    clickhouse_reader_user: str = "tawag_dashboards"
    """Server mode: who the dashboards and ``tawag sql`` read as — a user ``tawag migrate``
    creates with the read-only profile and the every-tenant role (warehouse/server_access.py),
    never the writer."""
    clickhouse_reader_password: str = field(default="", repr=False)

    cdr_retention_days: int = 0
    """CDRs (and agent stats, callbacks) older than this are dropped by TTL; 0 keeps them."""
    call_events_retention_days: int = 0
    """Raw events older than this are dropped by TTL; 0 keeps them (replay needs them)."""

    # --- dashboards --------------------------------------------------------------------
    dashboard_port: int = 8501

    # --- CRM connectors (amoCRM, Bitrix24, 1C) -------------------------------------------
    # ``TAWAG_CRM_ENABLED=amocrm,bitrix24`` turns the connectors worker on in ``tawag up``;
    # user maps are ``TAWAG_CRM_AMOCRM_USERS="101=8001,102=8002"`` (extension=CRM user).
    crm_enabled: tuple[str, ...] = ()
    """Which CRMs to sync with: any of ``amocrm``, ``bitrix24``, ``onec`` (empty: none)."""
    crm_topic_contacts: str = "tawag.crm-contacts"
    """Compacted, key ``tenant:phone:crm``: the client's responsible manager and extension."""

    crm_amocrm_base_url: str = ""
    """The account's domain, ``https://{subdomain}.amocrm.ru`` (or ``.kommo.com``)."""
    crm_amocrm_client_id: str = ""
    """Integration id (OAuth ``client_id``)."""
    crm_amocrm_client_secret: str = field(default="", repr=False)
    crm_amocrm_redirect_uri: str = ""
    """The redirect URI registered with the integration (sent again on every refresh)."""
    crm_amocrm_users: dict[str, str] = field(default_factory=dict)
    """Extension -> amoCRM user id (who gets the screen-pop, who answered)."""
    crm_amocrm_default_user: str = ""
    """amoCRM user that owns tasks for numbers nobody owns yet."""

    crm_bitrix24_base_url: str = ""
    """``https://portal/rest/`` (OAuth app) or an inbound webhook ``.../rest/{uid}/{code}/``."""
    crm_bitrix24_oauth_url: str = "https://oauth.bitrix.info/oauth/token/"
    crm_bitrix24_client_id: str = ""
    """OAuth application id; empty: ``crm_bitrix24_base_url`` is an inbound webhook."""
    crm_bitrix24_client_secret: str = field(default="", repr=False)
    crm_bitrix24_users: dict[str, str] = field(default_factory=dict)
    """Extension -> Bitrix24 user id (USER_ID of register/show/hide/finish)."""
    crm_bitrix24_default_user: str = ""
    """Bitrix24 user that owns calls and leads nobody answered."""
    crm_bitrix24_line_number: str = ""
    """LINE_NUMBER of ``telephony.externalLine.add`` the calls are registered on."""
    crm_bitrix24_application_token: str = field(default="", repr=False)
    """``auth[application_token]`` that ONEXTERNALCALLSTART events must carry (click-to-call)."""

    crm_onec_base_url: str = ""
    """``http://host/publication/odata/standard.odata/``."""
    crm_onec_user: str = ""
    crm_onec_password: str = field(default="", repr=False)
    crm_onec_users: dict[str, str] = field(default_factory=dict)
    """Extension -> ``Catalog_Пользователи`` Ref_Key (Ответственный_Key)."""
    crm_onec_manager_field: str = "ОсновнойМенеджер_Key"
    """Attribute of ``crm_onec_manager_owner`` holding the responsible manager."""
    crm_onec_manager_owner: str = "Catalog_Партнеры"
    """Entity set holding the manager: the partner (``Партнер_Key`` of the counterparty) in
    УТ 11 / КА 2 / ERP; ``Catalog_Контрагенты`` if your configuration keeps it there.
    Checked against ``$metadata`` at start."""
    crm_onec_timezone: str = "Europe/Moscow"
    """1C OData dates carry no zone: they are the base's local time."""

    crm_call_source: str = "tawag"
    """``source`` of amoCRM calls and the tag of our 1C documents."""
    crm_missed_task_deadline_s: int = 3600
    """A missed call's callback task is due this long after the call."""
    crm_http_timeout_s: float = 10.0
    crm_recording_wait_s: float = 5.0
    """An answered call's CDR closes just before its WAV is ready: its call record waits
    this long for the CDR revision that carries the recording (and its link)."""
    crm_screen_pop_deadline_s: float = 2.0
    """A card shown later than this is useless; screen-pops are not queued durably."""

    # --- recording links (served by the connectors worker) ------------------------------
    recordings_http_host: str = "127.0.0.1"
    """Address the connectors worker's HTTP server binds (put a TLS proxy in front)."""
    recordings_http_port: int = 8502
    """Signed, expiring recording downloads (``GET /recordings/<file>?expires=&sig=``)."""
    recordings_base_url: str = ""
    """Public base of those links as the CRM sees it (behind your reverse proxy);
    empty: ``http://127.0.0.1:<recordings_http_port>/recordings`` (local use only)."""
    recordings_link_secret: str = field(default="", repr=False)
    """HMAC key of the links; empty: generated once into ``data_dir/connectors``."""
    recordings_link_ttl_s: int = 0
    """Links a CRM stores (amoCRM's call note, 1C's Описание) are played whenever a user
    presses play, for as long as the CRM keeps the call: 0 = no expiry, revoked by
    rotating the link key (``connectors.recording_links.rotate_link_key``); or a lifetime
    in s."""
    recordings_fetch_link_ttl_s: int = 3600
    """Links a CRM downloads once and does not keep (Bitrix24's ``RECORD_URL`` fallback),
    and the links of the public API's call detail."""

    # --- public API and webhooks (``tawag api``) ------------------------------------------
    api_host: str = "127.0.0.1"
    """Address the public REST API binds (put a TLS proxy in front)."""
    api_port: int = 8503
    """``/api/v1`` (per-tenant API keys: ``tawag apikey add``) and its webhook worker."""
    api_rate_per_s: float = 20.0
    """Requests per second each API key may make on average (token bucket) ..."""
    api_rate_burst: int = 60
    """... and at once; past it the API answers 429 with Retry-After."""
    api_instance_id: str = "api-1"
    """Kafka static membership id of the webhook worker's consumer. Unique per worker."""
    webhook_max_age_s: int = 24 * 3600
    """A webhook still undelivered this long after its first attempt is given up (logged
    as ``rejected`` in the subscription's delivery log); retries back off exponentially."""
    webhook_timeout_s: float = 5.0
    """How long one delivery may take; a slower receiver counts as a failed attempt."""
    steering: bool = True
    """The edge asks the API before routing a carrier call, so a tenant's Zadarma-format
    NOTIFY_START receiver can steer it (``api.steering``)."""
    steer_wait_s: float = 1.5
    """How long the API waits for that receiver's answer; then the call is routed as
    provisioned. The edge gives up on the API itself this rounded up, plus 1 s."""

    # --- metrics (Prometheus text format, ``GET /metrics``) -------------------------------
    metrics_host: str = "127.0.0.1"
    """Address every component's metrics endpoint binds (put Prometheus on this host, or
    set 0.0.0.0 behind a firewall)."""
    supervisor_metrics_port: int = 9100
    """``tawag up``: restarts, up/given-up and last exit code of each component."""
    ingest_metrics_port: int = 9101
    """The ingest bridge: events in/produced, dead letters, evapi reconnects (spool)."""
    streams_metrics_port: int = 9102
    """The Faust worker: events in/out per agent, dead letters, consumer lag."""
    warehouse_metrics_port: int = 9103
    """The warehouse: rows loaded, batches, dead letters, HTTP queries and latency."""
    connectors_metrics_port: int = 9104
    """The CRM connectors worker: deliveries, failures, retries, 429s, outbox depth."""
    rtpengine_http_port: int = 2225
    """rtpengine's own HTTP listener; its ``/metrics`` is rtpengine's Prometheus export."""
    streams_lag_interval_s: float = 5.0
    """How often the Faust worker asks Kafka for its consumer group's lag."""
    streams_commit_stall_s: float = 20.0
    """How long a partition's commit may be held by a message Faust never delivered
    before the worker seeks back to it (:mod:`streams.commit_watch`)."""

    # --- derived paths -----------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def spool_dir(self) -> Path:
        """The ingest bridge's spool of events not yet acknowledged by Kafka."""
        return self.data_dir / "spool"

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
    def hold_music_file(self) -> Path:
        if self.hold_music:
            return Path(self.hold_music)
        return self.data_dir / "media" / "hold-music.wav"

    @property
    def recordings_wav_dir(self) -> Path:
        return self.recordings_dir / "wav"

    @property
    def connectors_dir(self) -> Path:
        """The CRM connectors' outbox journal, rejection log, tokens and link key."""
        return self.data_dir / "connectors"

    @property
    def kamailio_rpc_url(self) -> str:
        return f"http://{self.sip_host}:{self.kamailio_http_port}/RPC"

    @property
    def warehouse_url(self) -> str:
        return f"http://{self.warehouse_host}:{self.warehouse_http_port}/"

    def time_zone_of(self, tenant: str) -> str:
        """The tenant's IANA zone: provisioning's ``time_zone``, else ``default_time_zone``."""
        return tenant_zones(self.provisioning_file, self.default_time_zone).get(
            tenant, self.default_time_zone)

    def time_zones(self) -> dict[str, str]:
        """Every provisioned tenant's IANA zone (see :meth:`time_zone_of`)."""
        return tenant_zones(self.provisioning_file, self.default_time_zone)

    def tenant_for_domain(self, domain: str | None) -> str:
        """Tenant owning a SIP domain (provisioning's ``domain``); ``tenant`` for a domain
        the file does not name (or no file)."""
        return tenant_domains(self.provisioning_file).get(domain or "", self.tenant)


def _coerce(raw: str, typ: object, current: object) -> object:
    if isinstance(current, bool):
        return raw.lower() in ("1", "true", "yes", "on")
    if isinstance(current, float):
        return float(raw)
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, tuple):
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if isinstance(current, dict):
        return _parse_map(raw)
    if isinstance(current, Path):
        return Path(raw).expanduser().resolve()
    return raw


def _parse_map(raw: str) -> dict[str, str]:
    """``"101=8001, 102=8002"`` -> ``{"101": "8001", "102": "8002"}``."""
    pairs: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"expected key=value pairs separated by commas, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def _format(value: object) -> str:
    """The inverse of :func:`_coerce` (what a child process's environment carries)."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


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
    return {_env(f.name): _format(getattr(settings, f.name)) for f in fields(Settings)}
