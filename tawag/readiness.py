"""Readiness checks that ask Kafka, for processes that have no port of their own."""

from __future__ import annotations

from tawag.settings import Settings

__all__ = ["consumer_group_ready"]


def consumer_group_ready(settings: Settings, group_id: str) -> bool:
    """True once ``group_id`` is Stable with at least one member holding partitions."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                 request_timeout_ms=2000, client_id="tawag-readiness")
    except KafkaError:
        return False
    try:
        group = admin.describe_groups([group_id])[group_id]
        members = group.get("members") or []
        return group.get("group_state") == "Stable" and any(
            m.get("member_assignment") for m in members)
    except (KafkaError, ValueError, KeyError):
        return False
    finally:
        admin.close()
