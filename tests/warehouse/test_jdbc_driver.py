"""ClickHouse's official JDBC driver (the one DBeaver uses) against the warehouse HTTP port.

``tests/warehouse/jdbc/JdbcCheck.java`` does what DBeaver does first -- product version,
schemas, tables, columns -- then a plain and a prepared statement, a 100 000-row result,
a failing and a refused statement, with the driver's DEFAULT URL
(``jdbc:clickhouse://host:port/tawag``: compressed answers, RowBinaryWithNamesAndTypes),
as a tenant user. The jars are the ones ``deploy/install-debian.sh`` fetched from Maven
Central for the version pinned in ``deploy/jdbc/pom.xml``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from served import serve

from warehouse import guard

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path(__file__).with_name("jdbc") / "JdbcCheck.java"


def jdbc_version() -> str:
    pom = (REPO / "deploy" / "jdbc" / "pom.xml").read_text()
    return re.search(r"<clickhouse.jdbc.version>([^<]+)<", pom).group(1)


def jdbc_libs() -> Path:
    return Path(os.environ.get("TAWAG_JDBC_LIBS")
                or REPO / "var" / "jdbc-libs" / jdbc_version())


@pytest.fixture(scope="module")
def classpath(tmp_path_factory) -> str:
    libs = jdbc_libs()
    if not list(libs.glob(f"clickhouse-jdbc-{jdbc_version()}.jar")):
        pytest.skip(f"no JDBC driver jars in {libs} (deploy/install-debian.sh fetches them)")
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (openjdk-17-jdk-headless)")
    out = tmp_path_factory.mktemp("jdbc")
    jars = f"{libs}/*"
    subprocess.run(["javac", "-d", str(out), "-cp", jars, str(SOURCE)], check=True,
                   timeout=120)
    return f"{jars}{os.pathsep}{out}"


def run_check(classpath: str, port: int, user: str, password: str,
              call_id: str) -> dict[str, str]:
    proc = subprocess.run(
        ["java", "-cp", classpath, "JdbcCheck", f"jdbc:clickhouse://127.0.0.1:{port}/tawag",
         user, password, call_id], capture_output=True, text=True, timeout=180, check=True)
    return dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)


@pytest.fixture
def served(tmp_path):
    with serve(tmp_path) as s:
        yield s


def test_the_jdbc_driver_with_its_defaults_as_a_tenant_user(classpath, served):
    out = run_check(classpath, served.port, "alice", served.passwords["alice"], "c1")

    assert re.fullmatch(r"ClickHouse \d+\.\d+\.\d+\.\d+", out["product"])
    assert out["schemas"] == "tawag"
    assert out["tables"].split(",") == sorted(t.split(".")[1] for t in guard.TABLES)
    columns = dict(c.split(":", 1) for c in re.split(r",(?=[a-z_]+:)", out["columns"]))
    assert columns["tenant"] == "LowCardinality(String)"
    assert columns["started_at"] == "DateTime64(3, 'UTC')"
    assert out["plain"] == "acme=2"  # beta's call is not counted
    assert out["prepared"] == "c1=+74951234567"
    assert out["big"] == f"100000 {sum(range(100_000))}"
    status, code, message = out["failing"].split("\t", 2)
    assert (status, code) == ("ERROR", "47")
    assert "no_such_column" in message
    status, code, message = out["refused"].split("\t", 2)
    assert (status, code) == ("ERROR", "497")
    assert "file()" in message


def test_a_tenant_user_reads_only_its_rows_through_jdbc(classpath, served):
    alice = run_check(classpath, served.port, "alice", served.passwords["alice"], "b1")
    bob = run_check(classpath, served.port, "bob", served.passwords["bob"], "b1")

    assert alice["prepared"] == ""  # b1 is beta's call
    assert bob["prepared"] == "b1=+79990000000"
    assert bob["plain"] == "beta=1"
    assert bob["tables"] == alice["tables"]


def test_a_wrong_password_is_authentication_failed_through_jdbc(classpath, served):
    proc = subprocess.run(
        ["java", "-cp", classpath, "JdbcCheck",
         f"jdbc:clickhouse://127.0.0.1:{served.port}/tawag", "alice", "wrong", "c1"],
        capture_output=True, text=True, timeout=180)
    assert "516" in proc.stdout + proc.stderr
    assert "acme=" not in proc.stdout
