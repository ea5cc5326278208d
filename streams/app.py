"""The Faust app of the stream processors: built from settings, wired once, nothing else.

    from streams.app import run_worker
    run_worker(core.settings.load())        # blocks until SIGINT/SIGTERM

or ``faust -A streams.app worker -l info`` (the module-level ``app`` is built lazily from
``core.settings.load()``), or ``python -m streams``.

Reads ``settings.topic_call_events``; writes ``settings.topic_cdrs`` and
``settings.topic_dead_letter``, and (names in :mod:`streams.topics`)
``tawag.agent-states``, ``tawag.agent-stats`` and ``tawag.callbacks``; reads back
``settings.topic_cdrs`` for the callback list; reads ``tawag.agent-states``,
``tawag.agent-stats`` (calls today) and ``settings.crm_topic_contacts`` and writes
``settings.topic_routing`` (routing facts and a heartbeat for the edge); owns the
changelog topics ``tawag-streams-{calls,dead-letters,agents,callbacks}-changelog`` (and
those of the routing tables) and the internal
repartition topics ``tawag-streams-agent-events-repartition`` and
``tawag-streams-callback-cdrs-repartition``. Faust's data directory is
``settings.data_dir / "faust"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import faust
from faust.types import AgentT

from core.metrics import serve as serve_metrics
from core.settings import Settings
from core.timezones import BusinessHours
from streams import commit_watch, runner
from streams.agents.routing import heartbeat_fact
from streams.folds.agent_state import AgentConfig
from streams.folds.callbacks import CallbackConfig
from streams.metrics import LagMonitor
from streams.tables import Tables, declare_tables
from streams.topics import Topics, contiguous_sources, declare_topics
from streams.topology import routing_stages, stages

__all__ = ["APP_ID", "Streams", "agent_config", "callback_config", "create_app",
           "build_streams", "new_app", "run_worker"]

APP_ID = "tawag-streams"
"""Faust app id: also the Kafka consumer group and the changelog topics' prefix."""


@dataclass(frozen=True)
class Streams:
    """An app with its topics, tables and agents, so tests can reach each one."""

    app: faust.App
    topics: Topics
    tables: Tables
    agents: dict[str, AgentT]


def broker_url(bootstrap: str) -> str:
    """``host:port[,host:port]`` (Kafka's bootstrap form) as Faust's ``kafka://`` URL list."""
    hosts = [h.strip() for h in bootstrap.split(",") if h.strip()]
    return ";".join(h if "://" in h else f"kafka://{h}" for h in hosts)


def new_app(settings: Settings) -> faust.App:
    """A bare app configured for this stack, without topics, tables or agents."""
    return faust.App(
        APP_ID,
        broker=broker_url(settings.kafka_bootstrap),
        # No RocksDB on this platform: tables live in RAM and are rebuilt from changelogs.
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        # Not needed (no table views); off so several workers can share one host.
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        # A new consumer group starts at offset 0: a fresh stack replays every call.
        consumer_auto_offset_reset="earliest",
        # The repartition topics are created by this app when it starts, after the consumer
        # has subscribed; the group only takes them up once the consumer's metadata is
        # refreshed (5 min by default). Refresh every 10 s so a fresh stack starts folding
        # agents and callbacks within seconds (pre-creating the topics avoids the wait).
        consumer_metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        producer_acks=-1,
        autodiscover=False,
        # static membership: a restarted worker (same id) is not made to wait out the
        # session of the one that died before it gets its partitions back
        consumer_group_instance_id=settings.streams_instance_id or None,
    )


def build_streams(app: faust.App, settings: Settings, *, topics: Topics | None = None) -> Streams:
    """Declare topics (or use the given ones), tables and agents on ``app``."""
    topics = topics if topics is not None else declare_topics(app, settings)
    tables = declare_tables(app, settings)
    agents = {stage.key: runner.register(app, topics, tables, stage)
              for stage in (*stages(agent_config(settings), callback_config(settings)),
                            *routing_stages(agent_config(settings)))}
    _install_heartbeat(app, topics, settings.routing_heartbeat_s)
    commit_watch.install(app, settings.streams_commit_stall_s, contiguous_sources(topics))
    return Streams(app=app, topics=topics, tables=tables, agents=agents)


def _install_heartbeat(app: faust.App, topics: Topics, interval_s: float) -> None:
    """A routing heartbeat every ``interval_s`` (:func:`streams.agents.routing.heartbeat_fact`)."""

    async def routing_heartbeat() -> None:
        key, value = heartbeat_fact()
        await topics.routing.send(key=key, value=value)

    app.timer(interval_s, name="routing-heartbeat")(routing_heartbeat)


def agent_config(settings: Settings) -> AgentConfig:
    """The agent fold's policy from the settings (the worker and ``tawag replay`` alike)."""
    return AgentConfig(wrap_up_ms=settings.agent_wrap_up_s * 1000,
                       horizon=timedelta(seconds=settings.agent_lateness_horizon_s),
                       late_window=timedelta(seconds=settings.agent_late_window_s),
                       max_row_bytes=settings.agent_row_max_bytes,
                       time_zones=tuple(sorted(settings.time_zones().items())),
                       default_time_zone=settings.default_time_zone)


def callback_config(settings: Settings) -> CallbackConfig:
    """The callback fold's policy: the tenant's country, ``callback_retention_days``, and
    the tenants' time zones (provisioning) and business hours for the night/weekend flags."""
    return CallbackConfig(country=settings.default_country,
                          retention=timedelta(days=settings.callback_retention_days),
                          time_zones=tuple(sorted(settings.time_zones().items())),
                          default_time_zone=settings.default_time_zone,
                          business_hours=BusinessHours.parse(settings.business_hours,
                                                             settings.business_days))


def create_app(settings: Settings) -> faust.App:
    """The stream processors' app for ``settings``, ready for a worker."""
    return build_streams(new_app(settings), settings).app


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run the stream processors in this process until SIGINT/SIGTERM (blocks)."""
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    app.finalize()
    app.worker_init()
    app.worker_init_post_autodiscover()
    worker = faust.Worker(app, loglevel=loglevel)
    metrics_server = serve_metrics(settings.metrics_host, settings.streams_metrics_port,
                                   "streams")
    lag = LagMonitor(settings.kafka_bootstrap, APP_ID, settings.streams_lag_interval_s).start()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # mode's worker always exits; only a failure should propagate
        if exc.code not in (None, 0):
            raise
    finally:
        lag.stop()
        if metrics_server is not None:
            metrics_server.stop()


def __getattr__(name: str) -> faust.App:
    """Module-level ``app`` for ``faust -A streams.app``, built on first access only."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from core.settings import load

    settings = load()
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    globals()["app"] = built = create_app(settings)
    return built
