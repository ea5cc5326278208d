"""The floors of DESIGN.md §10, checked on the source: no import runs back up.

    roof    tawag/       the operator's tools: CLI, supervisor, broker admin, replay, demo
    flow    edge/ ingest/ streams/ warehouse/ connectors/ dashboards/ api/
    ground  core/        settings and the wire contracts (events, records, phone numbers)

The ground imports nothing of the project; a flow package imports the ground and only
the documented API of another flow package (below); the roof may import anything.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GROUND = "core"
FLOW = ["edge", "ingest", "streams", "warehouse", "connectors", "dashboards", "api"]
ROOF = "tawag"

ALLOWED = {
    GROUND: {GROUND},
    **{package: {package, GROUND} for package in FLOW},
}
ALLOWED["ingest"] |= {"edge.rtpengine"}  # the recorder asks rtpengine whether a call's media ended
ALLOWED["ingest"] |= {"edge.control"}  # the reconciler asks Kamailio for its live dialogs
ALLOWED["dashboards"] |= {"warehouse.client", "warehouse.queries",  # the named queries
                          "warehouse.users",  # who may log in
                          "api.delivery_log"}  # the webhook delivery log page
ALLOWED["api"] |= {"warehouse.client", "warehouse.queries",  # the named queries
                   "connectors.outbox",  # the durable delivery journal of the webhooks
                   "connectors.recording_links",  # the one signer of recording links
                   "edge.control",  # the edge's token on steering requests; click-to-call
                   "ingest.zadarma",  # Zadarma notifications -> events (pure), for /zadarma
                   "ingest.bridge",  # ingest's producer settings and dead-letter record
                   "connectors.click_to_call"}  # POST /calls: the edge's bridge, the links


def project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    tops = {GROUND, *FLOW, ROOF}
    return {n for n in names if n.split(".")[0] in tops}


def allowed(name: str, rules: set[str]) -> bool:
    return any(name == r or name.startswith(r + ".") for r in rules)


@pytest.mark.parametrize("package", [GROUND, *FLOW])
def test_no_import_runs_back_up(package):
    offending = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in project_imports(path):
            if not allowed(name, ALLOWED[package]):
                offending.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offending == []


def test_every_package_is_on_a_floor():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages == {GROUND, *FLOW, ROOF}


@pytest.mark.parametrize("package", [GROUND, "edge", "streams", "connectors", "dashboards",
                                     "ingest", "api", ROOF])
def test_sql_lives_only_in_the_warehouse(package):
    hits = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and id(node) not in _docstrings(tree)):
                text = node.value.upper()
                if "SELECT " in text and " FROM " in text:
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert hits == []


def _docstrings(tree: ast.Module) -> set[int]:
    """Docstrings document SQL (usage examples); only code runs it."""
    owners = [tree, *(n for n in ast.walk(tree)
                      if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef))]
    return {id(o.body[0].value) for o in owners
            if o.body and isinstance(o.body[0], ast.Expr)
            and isinstance(o.body[0].value, ast.Constant)}
