"""core.zadarma: Zadarma's signature, time and number formats (crm-contracts.md §4.1), and
the tenant's ``[tenant.<name>.zadarma]`` secret. The reference signature is written from
§4.1 alone (PHP ``base64_encode(hash_hmac('sha1', ...))``, hash_hmac giving hex)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core import zadarma
from edge import provision

SECRET = "zadarma-api-secret"


def php_signature(signed: str, secret: str) -> str:
    return base64.b64encode(
        hmac.new(secret.encode(), signed.encode(), hashlib.sha1).hexdigest().encode()).decode()


EXAMPLE_END = {"event": "NOTIFY_END", "call_start": "2026-10-05 09:15:07",
               "pbx_call_id": "in_ae6b03b3b0765d127ec0b739209346bbc4f0d52d",
               "caller_id": "79161234567", "called_did": "74951234567", "internal": "101",
               "duration": "42", "disposition": "answered", "status_code": "16",
               "is_recorded": "1", "call_id_with_rec": "1759644907.2741"}


def test_the_contract_example_signature_verifies_and_nothing_else_does():
    header = php_signature("79161234567" + "74951234567" + "2026-10-05 09:15:07", SECRET)
    assert zadarma.signature(zadarma.signed_string(EXAMPLE_END), SECRET) == header
    assert zadarma.verify(EXAMPLE_END, header, SECRET)
    assert not zadarma.verify(EXAMPLE_END, header, "another-secret")
    assert not zadarma.verify(EXAMPLE_END | {"caller_id": "79160000000"}, header, SECRET)
    assert not zadarma.verify(EXAMPLE_END, None, SECRET)
    assert not zadarma.verify(EXAMPLE_END, header, "")  # no secret: nothing verifies
    assert not zadarma.verify(EXAMPLE_END | {"event": "NOTIFY_NOPE"}, header, SECRET)
    # base64 of the raw digest (the usual HMAC header) is not Zadarma's signature
    raw = base64.b64encode(hmac.new(SECRET.encode(), zadarma.signed_string(EXAMPLE_END)
                                    .encode(), hashlib.sha1).digest()).decode()
    assert not zadarma.verify(EXAMPLE_END, raw, SECRET)


@pytest.mark.parametrize("event,signed", [
    ("NOTIFY_START", "caller_id called_did call_start"),
    ("NOTIFY_INTERNAL", "caller_id called_did call_start"),
    ("NOTIFY_ANSWER", "caller_id destination call_start"),
    ("NOTIFY_END", "caller_id called_did call_start"),
    ("NOTIFY_OUT_START", "internal destination call_start"),
    ("NOTIFY_OUT_END", "internal destination call_start"),
    ("NOTIFY_RECORD", "pbx_call_id call_id_with_rec"),
])
def test_each_event_signs_the_fields_of_the_contract_table(event, signed):
    form = {"event": event, **{name: f"<{name}>" for name in
                               ("caller_id", "called_did", "call_start", "destination",
                                "internal", "pbx_call_id", "call_id_with_rec")}}
    expected = "".join(f"<{name}>" for name in signed.split())
    assert zadarma.verify(form, php_signature(expected, SECRET), SECRET)


def test_call_start_is_the_accounts_wall_time():
    assert zadarma.from_local("2026-10-05 09:15:07", "Europe/Moscow") == datetime(
        2026, 10, 5, 6, 15, 7, tzinfo=UTC)
    assert zadarma.from_local("2026-12-06 08:00:00", "Asia/Manila") == datetime(
        2026, 12, 6, 0, 0, tzinfo=UTC)
    instant = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)  # Berlin's spring-forward day
    assert zadarma.from_local(zadarma.to_local(instant, "Europe/Berlin"),
                              "Europe/Berlin") == instant
    for bad in ("2026-10-05T09:15:07", "05.10.2026 09:15:07", "", "2026-13-01 00:00:00"):
        with pytest.raises(ValueError):
            zadarma.from_local(bad, "Europe/Moscow")


def test_numbers_are_international_without_plus_whatever_the_tenants_country():
    assert zadarma.from_number("79161234567", "RU") == "+79161234567"
    assert zadarma.from_number("493012345678", "RU") == "+493012345678"
    assert zadarma.from_number("101", "DE") == "101"
    assert zadarma.from_number("", "RU") is None
    assert zadarma.to_number(zadarma.from_number("74951234567", "RU")) == "74951234567"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tawag.toml"
    path.write_text(text)
    return path


def test_the_secret_is_a_per_tenant_provisioning_table(tmp_path: Path):
    path = write(tmp_path, """[tenant.acme]
domain = "pbx.test"

[tenant.acme.zadarma]
secret = "s3cret"

[tenant.globex]
domain = "globex.test"
""")
    assert provision.check(path) == []
    assert zadarma.tenant_secrets(path) == {"acme": "s3cret"}


def test_provisioning_check_names_a_bad_zadarma_table_with_its_line(tmp_path: Path):
    path = write(tmp_path, """[tenant.acme]
domain = "pbx.test"

[tenant.acme.zadarma]
secret = ""
key = "x"
""")
    assert [str(e) for e in provision.check(path)] == [
        f"{path}:6: zadarma: unknown key 'key' (known: secret)",
        f"{path}:5: zadarma.secret: the account's API secret is required",
    ]
    assert zadarma.tenant_secrets(path) == {}  # an invalid table verifies nothing
