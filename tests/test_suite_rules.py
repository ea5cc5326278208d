"""The suite's own rule (tests/conftest.py): under `make test` a skip is a broken install."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()
SKIPPING = """
import pytest

def test_needs_a_missing_jar():
    pytest.skip("Kafka jars not installed")

@pytest.mark.xfail(reason="known")
def test_known_failure():
    assert False
"""


@pytest.mark.parametrize(("require_all", "outcome"), [
    ("1", {"failed": 1, "xfailed": 1}),
    ("", {"skipped": 1, "xfailed": 1}),
])
def test_a_skip_fails_only_when_everything_must_be_installed(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, require_all: str,
        outcome: dict[str, int]) -> None:
    monkeypatch.setenv("TAWAG_TESTS_REQUIRE_ALL", require_all)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(SKIPPING)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(**outcome)
    if require_all:
        result.stdout.fnmatch_lines(["*install is broken*Kafka jars not installed*"])
