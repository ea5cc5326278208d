"""The package boundaries of DESIGN.md §1, checked on the source.

Each step of the flow talks to the others through topics, tables or a small documented
API: the core packages may import the schema (``ingest.events``), the records
(``streams.records``, ``streams.agent_records``), the warehouse's query API and
``tawag.settings`` -- never the operator's CLI and supervisor in ``tawag/``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ["ingest", "streams", "warehouse", "connectors", "dashboards"]

ALLOWED = {
    "ingest": {"ingest", "tawag.settings"},
    "streams": {"streams", "ingest.events", "ingest.phone", "tawag.settings"},
    "warehouse": {"warehouse", "ingest.events", "streams.records", "streams.agent_records",
                  "tawag.settings"},
    "connectors": {"connectors", "ingest.events", "ingest.phone", "streams.records",
                   "tawag.settings"},
    "dashboards": {"dashboards", "warehouse.client", "warehouse.queries", "warehouse.users",
                   "tawag.settings"},
}


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    tops = {"tawag", *CORE}
    return {n for n in names if n.split(".")[0] in tops}


def allowed(name: str, rules: set[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in rules)


@pytest.mark.parametrize("package", CORE)
def test_core_packages_import_only_their_documented_dependencies(package):
    offending = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in project_imports(path):
            if not allowed(name, ALLOWED[package]):
                offending.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offending == []


@pytest.mark.parametrize("package", ["streams", "connectors", "dashboards", "ingest"])
def test_sql_lives_only_in_the_warehouse(package):
    hits = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value.upper()
                if "SELECT " in text and " FROM " in text:
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert hits == []
