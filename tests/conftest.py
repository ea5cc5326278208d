"""Suite-wide rules.

Under ``make test`` (``TAWAG_TESTS_REQUIRE_ALL=1``) the project has installed every
program and jar the tests need, so a test that skips for a missing one means the install
is broken: it is reported as a failure, with the skip's reason. Run pytest directly for
an ad-hoc run on a machine without them, and the skips stay skips.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_ALL = os.environ.get("TAWAG_TESTS_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped under `make test`, where nothing may be missing "
                           f"(the install is broken): {reason}")
