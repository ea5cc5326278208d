"""Fixtures: each fake CRM on a loopback port (31000-31099)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes.amocrm import FakeAmoCrm
from fakes.bitrix24 import FakeBitrix24
from fakes.onec import FakeOneC
from fakes.server import FakeServer


@pytest.fixture
def amo() -> Iterator[tuple[FakeAmoCrm, FakeServer]]:
    fake = FakeAmoCrm()
    server = FakeServer(fake).start()
    yield fake, server
    server.close()


@pytest.fixture
def b24() -> Iterator[tuple[FakeBitrix24, FakeServer]]:
    fake = FakeBitrix24()
    server = FakeServer(fake).start()
    yield fake, server
    server.close()


@pytest.fixture
def onec() -> Iterator[tuple[FakeOneC, FakeServer]]:
    fake = FakeOneC()
    server = FakeServer(fake).start()
    yield fake, server
    server.close()
