"""Click-to-call without SIP: the link between a Bitrix24 CALL_ID and the Tawag call, the
refusals of :class:`EdgeOriginator`, and the CRM side of both outcomes against the fake
Bitrix24 (finish on the portal's CALL_ID, never a second register).

The real edge is exercised in tests/integration/test_click_to_call_e2e.py.
"""

from __future__ import annotations

import httpx
import pytest
from crm_helpers import T0, b24_client, make_cdr, sync_settings, wait_for

from connectors.click_to_call import (
    ClickToCallLinks,
    EdgeOriginator,
    Link,
    OriginationRefused,
    outside_number,
)
from connectors.outbox import Outbox
from connectors.sync import SyncWorker
from connectors.targets import Target
from connectors.web import ClickToCall, ConnectorsHttp
from core.settings import load
from edge import control as edge

CLIENT = "+79161234567"


def link(at: float, until: float, ext: str = "101") -> Link:
    return Link("bitrix24", "externalCall.abc.1", "1269", ext, CLIENT, at=at, until=until)


def test_outside_numbers_only():
    assert outside_number("8 (916) 123-45-67", "RU") == CLIENT
    assert outside_number("+7 916 123 45 67", "RU") == CLIENT
    assert outside_number("101", "RU") is None and outside_number("12", "RU") is None
    assert outside_number("", "RU") is None


def test_the_first_outbound_call_in_the_window_claims_the_link_and_keeps_it(tmp_path):
    box = Outbox(tmp_path / "o.jsonl")
    links = ClickToCallLinks(box)
    links.expect(link(at=100.0, until=120.0))
    assert links.claim("other", "102", CLIENT, 105.0) is None  # another extension
    assert links.claim("late", "101", CLIENT, 121.0) is None  # after the window
    assert links.claim("early", "101", CLIENT, 90.0) is None  # before the click
    claimed = links.claim("C1", "101", CLIENT, 106.0)
    assert claimed is not None and claimed.crm_call_id == "externalCall.abc.1"
    assert links.claim("C2", "101", CLIENT, 107.0) is None  # one call per click
    assert links.claim("C1", None, None, 0.0) == claimed  # idempotent per call
    assert links.expired(1e12) == []
    box.close()
    # durable: a restarted worker still knows the tie
    assert ClickToCallLinks(Outbox(tmp_path / "o.jsonl")).linked("C1") == claimed


def test_unclaimed_links_expire_once(tmp_path):
    links = ClickToCallLinks(Outbox(tmp_path / "o.jsonl"))
    links.expect(link(at=100.0, until=120.0))
    assert links.expired(119.0) == []
    assert [x.crm_call_id for x in links.expired(121.0)] == ["externalCall.abc.1"]
    assert links.expired(122.0) == [] and links.claim("C1", "101", CLIENT, 110.0) is None


class _Portal:
    """The fake Bitrix24 with a call the portal registered itself (the click)."""

    def __init__(self, b24) -> None:
        self.fake, self.server = b24
        self.call_id, _ = self.fake.click_to_call(1269, CLIENT, token="t")


def test_the_claimed_call_is_finished_on_the_portal_call_in_the_clicking_users_name(
        b24, tmp_path):
    portal = _Portal(b24)
    worker = SyncWorker([Target(b24_client(*b24)[0], {"101": "1269"}, "1")],
                        Outbox(tmp_path / "o.jsonl"), settings=sync_settings(data_dir=tmp_path))
    worker.links.expect(Link("bitrix24", portal.call_id, "1269", "101", CLIENT,
                             at=T0.timestamp() - 1, until=T0.timestamp() + 30))
    worker.start()
    try:
        # the agent (101) talks; the CDR's agent is the client number, not a Bitrix24 user
        worker.handle_cdr(make_cdr("T1", direction="outbound", caller="101", callee=CLIENT,
                                   agent=CLIENT, talk_ms=42_000))
        done = wait_for(lambda: portal.fake.finished.get(portal.call_id), timeout=5,
                        what="finish")
    finally:
        worker.stop()
    assert done["PORTAL_USER_ID"] == 1269 and done["CALL_STATUS"] == 1
    assert done["CALL_DURATION"] == 42
    assert portal.fake.register_requests == []


def test_a_click_no_call_followed_is_finished_as_not_connected(b24, tmp_path):
    portal = _Portal(b24)
    worker = SyncWorker([Target(b24_client(*b24)[0], {"101": "1269"}, "1")],
                        Outbox(tmp_path / "o.jsonl"), settings=sync_settings(data_dir=tmp_path))
    worker.links.expect(Link("bitrix24", portal.call_id, "1269", "101", CLIENT,
                             at=100.0, until=120.0))
    worker.start()
    try:
        assert worker.expire_click_to_calls(119.0) == 0
        assert worker.expire_click_to_calls(121.0) == 1
        assert worker.expire_click_to_calls(122.0) == 0
        done = wait_for(lambda: portal.fake.finished.get(portal.call_id), timeout=5,
                        what="finish")
    finally:
        worker.stop()
    assert done["CALL_STATUS"] == 0 and done["CALL_FAILED_CODE"] == "603-S"
    assert portal.fake.register_requests == []
    # a late call from 101 to the client is then an ordinary call, not the click's
    assert worker.links.claim("T9", "101", CLIENT, 121.5) is None


@pytest.fixture
def fake_edge(monkeypatch):
    """edge.control's RPC helpers answering like a Kamailio with 101 registered."""
    bridged: list[tuple[str, str, str | None]] = []
    monkeypatch.setattr(edge, "pbx_value",
                        lambda s, key: "1" if key in ("ext:pbx.test:101",
                                                      "ext:pbx.test:102") else None)
    monkeypatch.setattr(edge, "registrations", lambda s, user: [
        edge.Registration("sip:101@127.0.0.1:5090")] if user == "101" else [])
    monkeypatch.setattr(edge, "bridge_call", lambda s, first, to, proxy=None:
                        bridged.append((first, to, proxy)))
    return bridged


def test_originator_refuses_clearly_and_links_before_it_bridges(fake_edge, tmp_path):
    links = ClickToCallLinks(Outbox(tmp_path / "o.jsonl"))
    originate = EdgeOriginator(load(environ={}, data_dir=tmp_path), links, edge,
                               now=lambda: 50.0)
    cases = {("199", CLIENT): 404, ("102", CLIENT): 409, ("101", "12"): 400}
    for (ext, phone), status in cases.items():
        with pytest.raises(OriginationRefused) as refused:
            originate(ClickToCall("bitrix24", ext, phone, "externalCall.x.1", "1269"))
        assert refused.value.status == status, refused.value.reason
    assert fake_edge == []
    originate(ClickToCall("bitrix24", "101", "8 916 123-45-67", "externalCall.x.1", "1269"))
    assert fake_edge == [("sip:101@127.0.0.1:5090", f"<sip:{CLIENT}@pbx.test>", None)]
    assert links.claim("C1", "101", CLIENT, 55.0).crm_call_id == "externalCall.x.1"


def test_the_http_answer_says_why(tmp_path):
    def refuse(call: ClickToCall) -> None:
        raise OriginationRefused(409, f"extension {call.extension} is not registered")

    not_placed: list[ClickToCall] = []
    http = ConnectorsHttp(host="127.0.0.1", port=0, wav_dir=tmp_path, secret=b"s",
                          bitrix24_token="tok", bitrix24_users={"101": "1269"},
                          originate=refuse, not_placed=not_placed.append).start()
    try:
        url = f"http://127.0.0.1:{http.port}/bitrix24/events"
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        def post(**data: str) -> httpx.Response:
            body = {"event": "ONEXTERNALCALLSTART", "auth[application_token]": "tok",
                    **{f"data[{k}]": v for k, v in data.items()}}
            return httpx.post(url, data=body, headers=form)

        no_id = post(USER_ID="1269", PHONE_NUMBER=CLIENT)
        assert (no_id.status_code, no_id.text) == (400, "no CALL_ID")
        no_number = post(USER_ID="1269", CALL_ID="c1")
        assert no_number.status_code == 400 and "PHONE_NUMBER" in no_number.text
        stranger = post(USER_ID="7", CALL_ID="c1", PHONE_NUMBER=CLIENT)
        assert stranger.status_code == 404 and "user 7 has no extension" in stranger.text
        offline = post(USER_ID="1269", CALL_ID="c1", PHONE_NUMBER=CLIENT)
        assert (offline.status_code, offline.text) == (409, "extension 101 is not registered")
        forged = httpx.post(url, headers=form, data={
            "event": "ONEXTERNALCALLSTART", "auth[application_token]": "wrong",
            "data[USER_ID]": "1269", "data[CALL_ID]": "c9", "data[PHONE_NUMBER]": CLIENT})
        assert forged.status_code == 403
    finally:
        http.stop()
    # every refused click that named a Bitrix24 call is to be finished there, in the name
    # of who clicked; one without a CALL_ID names nothing, a forged one is not ours
    assert [(c.crm_call_id, c.crm_user) for c in not_placed] == [
        ("c1", "1269"), ("c1", "7"), ("c1", "1269")]
