"""API keys (hashed, scoped, revocable), their CLI, and the per-key token bucket."""

from __future__ import annotations

import json

import pytest

from api.keys import KeyError_, KeyStore, add_key, keys_file, list_keys, revoke_key
from api.ratelimit import TokenBuckets, retry_after
from core.settings import load
from tawag.cli import main


def test_a_key_is_stored_only_as_its_hash(tmp_path):
    path = tmp_path / "keys.json"
    token = add_key(path, "acme", ("read",), name="crm")
    assert token not in path.read_text()
    assert token.split("_", 2)[2] not in path.read_text()
    key = KeyStore(path).authenticate(token)
    assert (key.tenant, key.scopes, key.name) == ("acme", ("read",), "crm")
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_wrong_unknown_and_revoked_keys(tmp_path):
    path = tmp_path / "keys.json"
    token = add_key(path, "acme", ("read", "webhooks:write"))
    store = KeyStore(path)
    key_id = token.split("_")[1]
    assert store.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.authenticate("tawag_ffffffffffff_" + "x" * 43) is None
    assert store.authenticate("") is None
    revoke_key(path, key_id)
    assert store.authenticate(token) is None  # the store rereads the changed file
    assert list_keys(path)[0].revoked_at is not None


def test_bad_requests(tmp_path):
    path = tmp_path / "keys.json"
    with pytest.raises(KeyError_):
        add_key(path, "acme", ("admin",))
    with pytest.raises(KeyError_):
        add_key(path, "a tenant; DROP", ("read",))
    with pytest.raises(KeyError_):
        revoke_key(path, "000000000000")


def test_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TAWAG_DATA_DIR", str(tmp_path))
    assert main(["apikey", "add", "--tenant", "acme", "--scope", "read", "--scope",
                 "webhooks:write", "--name", "crm"]) == 0
    token = capsys.readouterr().out.split(": ", 1)[1].split()[0]
    path = keys_file(load())
    key = KeyStore(path).authenticate(token)
    assert key.scopes == ("read", "webhooks:write")
    assert main(["apikey", "list"]) == 0
    listing = capsys.readouterr().out
    assert key.key_id in listing and token not in listing
    assert main(["apikey", "revoke", key.key_id]) == 0
    assert KeyStore(path).authenticate(token) is None
    assert main(["apikey", "add", "--tenant", "acme", "--scope", "everything"]) == 1
    assert json.loads(path.read_text())["keys"].keys() == {key.key_id}


def test_token_bucket():
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take("k", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 100.0) == pytest.approx(0.5)
    assert buckets.take("other", 100.0) == 0.0
    assert buckets.take("k", 100.5) == 0.0  # one token back after 1/rate
    assert buckets.take("k", 100.5) > 0
    assert [buckets.take("k", 200.0) for _ in range(4)][-1] > 0  # refills to burst only
    assert retry_after(0.01) == "1" and retry_after(1.2) == "2"
