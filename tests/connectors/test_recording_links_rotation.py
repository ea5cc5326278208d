"""Recording links (issue 19, item 6): links a CRM stores live until the key is rotated,
rotating the key revokes them all, links fetched once expire soon."""

from __future__ import annotations

import os
import stat
from urllib.parse import parse_qs, urlsplit

from connectors.recording_links import NEVER, recording_url, verify
from connectors.wiring import rotate_link_key, with_link_defaults
from core.settings import Settings

NOW = 1_800_000_000


def parts(url: str) -> tuple[str, str, str]:
    split = urlsplit(url)
    q = parse_qs(split.query)
    return split.path.split("/rec/", 1)[1], q["expires"][0], q["sig"][0]


def test_stored_links_never_expire_until_the_key_is_rotated(tmp_path):
    settings = with_link_defaults(Settings(data_dir=tmp_path,
                                           recordings_base_url="https://pbx.test/rec"))
    key = settings.recordings_link_secret.encode()
    url = recording_url(settings, "2026/11/26/A.wav", now=NOW)
    path, expires, sig = parts(url)
    assert expires == str(NEVER)
    assert verify(path, expires, sig, secret=key, now=NOW + 5 * 365 * 86400)
    new_key = rotate_link_key(settings).encode()
    assert new_key != key
    assert not verify(path, expires, sig, secret=new_key, now=NOW)  # revoked
    again = with_link_defaults(Settings(data_dir=tmp_path,
                                        recordings_base_url="https://pbx.test/rec"))
    assert again.recordings_link_secret.encode() == new_key  # the restart picks it up
    key_file = tmp_path / "connectors" / "recording-link.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600


def test_links_fetched_once_expire_after_the_short_ttl(tmp_path):
    settings = with_link_defaults(Settings(data_dir=tmp_path,
                                           recordings_base_url="https://pbx.test/rec"))
    key = settings.recordings_link_secret.encode()
    path, expires, sig = parts(recording_url(settings, "B.wav", now=NOW, stored=False))
    assert int(expires) == NOW + settings.recordings_fetch_link_ttl_s == NOW + 3600
    assert verify(path, expires, sig, secret=key, now=NOW + 3599)
    assert not verify(path, expires, sig, secret=key, now=NOW + 3601)
