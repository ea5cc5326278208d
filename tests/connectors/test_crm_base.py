"""Pure pieces: rate limiters, errors, the client protocol, token files, signed links, redaction."""

from __future__ import annotations

import logging
import stat

import pytest

from connectors import recording_links, redact
from connectors.base import (
    AMOCRM_LIMIT,
    BITRIX24_LIMIT,
    AuthExpired,
    ConnectorError,
    CrmClient,
    LeakyBucket,
    RateLimited,
    Rejected,
    SlidingWindow,
    Throttle,
    Unavailable,
)
from connectors.tokens import FileTokenStore, Token


def test_amocrm_window_allows_7_at_once_and_the_8th_one_second_later():
    window = SlidingWindow(**AMOCRM_LIMIT)
    waits = [window.reserve(0.0) for _ in range(8)]
    assert waits == [0.0] * 7 + [1.0]
    assert window.reserve(0.5) == pytest.approx(0.5)  # books t=1.0, still 7 per window


def test_bitrix24_bucket_holds_50_then_drains_two_per_second():
    bucket = LeakyBucket(**BITRIX24_LIMIT)
    assert all(bucket.reserve(0.0) == 0.0 for _ in range(50))
    assert bucket.reserve(0.0) == pytest.approx(0.5)
    assert bucket.reserve(0.0) == pytest.approx(1.0)
    # ten seconds later twenty requests have drained: the level is 32, no wait
    assert bucket.reserve(10.0) == 0.0


def test_throttle_sleeps_with_the_injected_clock_and_never_exceeds_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    throttle = Throttle(SlidingWindow(**AMOCRM_LIMIT), clock=lambda: now[0], sleep=sleep)
    sent = []
    for _ in range(70):
        throttle.acquire()
        sent.append(now[0])
    # in any one-second span at most 7 requests are sent, and no time is wasted
    assert max(sum(1 for t in sent if s <= t < s + 1) for s in sent) == 7
    assert sent[-1] == pytest.approx(9.0)


@pytest.mark.parametrize("client", ["amocrm", "bitrix24", "onec"])
def test_every_client_implements_the_whole_protocol(client):
    """The sync worker calls any CrmClient method on any target (no per-CRM branches)."""
    import importlib
    import inspect

    module = importlib.import_module(f"connectors.{client}.client")
    cls = next(c for _, c in inspect.getmembers(module, inspect.isclass)
               if getattr(c, "name", None) == client)
    for name, method in inspect.getmembers(CrmClient, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert name in vars(cls), f"{cls.__name__} lacks {name}"
        assert (list(inspect.signature(getattr(cls, name)).parameters)
                == list(inspect.signature(method).parameters)), name


def test_error_tree():
    for cls in (RateLimited, AuthExpired, Rejected, Unavailable):
        assert issubclass(cls, ConnectorError)
    exc = Rejected("no", crm="amocrm", status=400, body={"detail": "x"})
    assert exc.permanent and exc.body == {"detail": "x"} and exc.crm == "amocrm"
    assert RateLimited("slow", retry_after=2.5).retry_after == 2.5


def test_file_token_store_is_private_and_atomic(tmp_path):
    store = FileTokenStore(tmp_path / "t" / "amo.json")
    assert store.load() is None
    store.save(Token("access-1", "refresh-1", 123.0))
    store.save(Token("access-2", "refresh-2", 456.0))
    assert store.load() == Token("access-2", "refresh-2", 456.0)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in store.path.parent.iterdir()] == ["amo.json"]
    assert "access-2" not in repr(store.load())


SECRET = b"k" * 32


def test_signed_recording_link_verifies_until_it_expires():
    url = recording_links.sign_url("https://pbx.test/rec/", "2026/11/26/a b.mp3",
                                   secret=SECRET, expires_at=2000)
    assert url.startswith("https://pbx.test/rec/2026/11/26/a%20b.mp3?expires=2000&sig=")
    sig = url.rsplit("sig=", 1)[1]
    assert recording_links.verify("2026/11/26/a b.mp3", "2000", sig, secret=SECRET, now=1999)
    assert not recording_links.verify("2026/11/26/a b.mp3", "2000", sig, secret=SECRET, now=2001)


@pytest.mark.parametrize("path,expires,secret", [
    ("2026/11/26/other.mp3", "2000", SECRET),     # another file
    ("2026/11/26/a.mp3", "9999", SECRET),         # expiry pushed forward
    ("2026/11/26/a.mp3", "2000", b"x" * 32),      # another key
    ("2026/11/26/a.mp3", "soon", SECRET),         # garbage expiry
])
def test_signed_recording_link_refuses_tampering(path, expires, secret):
    sig = recording_links.signature("2026/11/26/a.mp3", 2000, SECRET)
    assert not recording_links.verify(path, expires, sig, secret=secret, now=1000)


def test_redaction_hides_tokens_webhook_codes_and_auth_headers(caplog):
    redact.install(("test.redact",))
    with caplog.at_level(logging.INFO, logger="test.redact"):
        logging.getLogger("test.redact").info(
            "GET %s", "https://b.test/oauth/token/?grant_type=refresh_token&client_secret=S1&"
                      "refresh_token=R1 https://b.test/rest/1/whcode99/x.json Bearer eyJabc")
    text = caplog.text
    assert "S1" not in text and "R1" not in text and "whcode99" not in text
    assert "eyJabc" not in text and "grant_type=refresh_token" in text
