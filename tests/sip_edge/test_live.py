"""edge.live: routing facts -> htable "live" writes (the JSON-RPC seam is a function)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.routing import FactKind, RoutingFact
from edge.control import KamailioRpcError
from edge.live import Applier, htable_calls, idle_since_s
from edge.provision import RpcCall

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class FakeKamailio:
    """An htable as Kamailio's JSON-RPC handles it (get of a missing key is an error)."""

    def __init__(self) -> None:
        self.table: dict[str, Any] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, method: str, *params: Any) -> Any:
        self.calls.append((method, params))
        if method in ("htable.seti", "htable.sets"):
            self.table[params[1]] = params[2]
        elif method == "htable.delete":
            if params[1] not in self.table:
                raise KamailioRpcError(method, 500, "Key name doesn't exist in htable.")
            del self.table[params[1]]
        elif method == "htable.get":
            if params[1] not in self.table:
                raise KamailioRpcError(method, 404, "Key name doesn't exist in htable.")
            return {"item": {"name": params[1], "value": self.table[params[1]]}}
        return None


def agent(value: str, since: datetime, ext: str = "101", tenant: str = "acme") -> RoutingFact:
    return RoutingFact(FactKind.AGENT, tenant, ext, value, since, 1)


def beat(at: datetime) -> RoutingFact:
    return RoutingFact(FactKind.HEARTBEAT, "", "", None, at, 0)


def applier(kamailio: FakeKamailio) -> Applier:
    return Applier(kamailio, lambda: {"acme": "pbx.test"}, stale_s=5,
                   clock=lambda: NOW.timestamp())


def test_an_available_agent_is_an_idle_since_entry_any_other_state_none() -> None:
    since = NOW + timedelta(milliseconds=200)
    assert htable_calls(agent("available", since), "pbx.test") == [
        RpcCall("htable.seti", ("live", "avail:pbx.test:101", int(NOW.timestamp()) + 1))]
    assert htable_calls(agent("on_call", since), "pbx.test") == [
        RpcCall("htable.delete", ("live", "avail:pbx.test:101"))]
    manager = RoutingFact(FactKind.MANAGER, "acme", "+79160000001", "103", None, 5, "amocrm")
    assert htable_calls(manager, "pbx.test") == [
        RpcCall("htable.sets", ("live", "mgr:pbx.test:79160000001", "103"))]
    assert idle_since_s(NOW) == int(NOW.timestamp())


def test_facts_are_written_and_a_busy_agent_removed() -> None:
    kamailio = FakeKamailio()
    live = applier(kamailio)
    live.apply(agent("offline", NOW))  # nothing to delete: fine
    live.apply(agent("available", NOW))
    assert kamailio.table == {"avail:pbx.test:101": int(NOW.timestamp())}
    live.apply(agent("ringing", NOW))
    assert kamailio.table == {}


def test_a_heartbeat_refills_a_table_that_lost_its_facts() -> None:
    kamailio = FakeKamailio()
    live = applier(kamailio)
    live.apply(agent("available", NOW))
    live.apply(agent("available", NOW, tenant="unknown"))  # no domain provisioned: kept only
    live.apply(beat(NOW))
    assert kamailio.table == {"avail:pbx.test:101": int(NOW.timestamp()),
                              "beat": int(NOW.timestamp())}
    kamailio.table.clear()  # Kamailio restarted
    live.apply(beat(NOW))
    assert kamailio.table == {"avail:pbx.test:101": int(NOW.timestamp()),
                              "beat": int(NOW.timestamp())}


def test_an_old_heartbeat_is_not_written() -> None:
    kamailio = FakeKamailio()
    applier(kamailio).apply(beat(NOW - timedelta(seconds=6)))
    assert kamailio.table == {}


def test_calls_today_are_a_count_and_the_end_of_its_day() -> None:
    end = NOW + timedelta(hours=15)
    fact = RoutingFact(FactKind.CALLS, "acme", "101", "4", NOW - timedelta(hours=9), 7,
                       until=end)
    assert htable_calls(fact, "pbx.test") == [
        RpcCall("htable.seti", ("live", "calls:pbx.test:101", 4)),
        RpcCall("htable.seti", ("live", "callsto:pbx.test:101", int(end.timestamp())))]
    kamailio = FakeKamailio()
    live = applier(kamailio)
    live.apply(fact)
    kamailio.table.clear()  # a restarted Kamailio: the next heartbeat writes it again
    live.apply(beat(NOW))
    assert kamailio.table["calls:pbx.test:101"] == 4
