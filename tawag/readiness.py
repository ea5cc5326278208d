"""Readiness checks that ask Kafka, for processes that have no port of their own."""

from __future__ import annotations

from core.settings import Settings

__all__ = ["ConsumerGroupReady", "consumer_group_ready", "assigned_members"]


def _describe(settings: Settings, group_id: str) -> dict | None:
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                 request_timeout_ms=2000, client_id="tawag-readiness")
    except KafkaError:
        return None
    try:
        return admin.describe_groups([group_id])[group_id]
    except (KafkaError, ValueError, KeyError):
        return None
    finally:
        admin.close()


def _assigned(group: dict | None, *, besides: frozenset[str] = frozenset()) -> bool:
    if group is None or group.get("group_state") != "Stable":
        return False
    return any(m.get("member_assignment") and m.get("member_id") not in besides
               for m in group.get("members") or [])


def consumer_group_ready(settings: Settings, group_id: str) -> bool:
    """True once ``group_id`` is Stable with at least one member holding partitions."""
    return _assigned(_describe(settings, group_id))


def assigned_members(settings: Settings, group_id: str) -> int:
    """How many members of a Stable ``group_id`` hold partitions (0 while rebalancing)."""
    group = _describe(settings, group_id)
    if group is None or group.get("group_state") != "Stable":
        return 0
    return sum(1 for m in group.get("members") or [] if m.get("member_assignment"))


class ConsumerGroupReady:
    """A consumer process's readiness that a restart cannot fool.

    After a ``kill -9`` the broker keeps the dead member, partitions and all, in a Stable
    group until its session times out, so "Stable with an assigned member" is true before
    the new process has even joined. :meth:`prepare` (run before each start) notes the
    members there are; the process is ready once the group is Stable with a member that
    holds partitions and was not among them — a member that joined after the start, which
    gets partitions only when the group has rebalanced without the dead one.
    """

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.before: frozenset[str] = frozenset()

    def prepare(self, settings: Settings) -> None:
        group = _describe(settings, self.group_id) or {}
        self.before = frozenset(m.get("member_id") for m in group.get("members") or [])

    def __call__(self, settings: Settings) -> bool:
        return _assigned(_describe(settings, self.group_id), besides=self.before)
