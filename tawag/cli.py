"""``tawag``: the operator's entry point. It only builds and wires; the work is elsewhere.

    tawag up [--no-demo]    start the whole stack in the foreground (Ctrl-C stops it);
                            a component that dies is restarted, the others run on
    tawag status            each component: up/down, PID, uptime, restarts, last exit, ports
    tawag down              stop a stack started elsewhere, by its PID files
    tawag sql "SELECT ..."  ask the running warehouse (ClickHouse HTTP interface)
    tawag user add NAME --tenant T | --admin   add a dashboard/warehouse user (prints
                            its password once); tawag user list; tawag user remove NAME
    tawag provision FILE    apply tenants, extensions, groups, DIDs live (--check: validate)
    tawag migrate           apply the warehouse migrations (idempotent)
    tawag replay            rebuild everything from the raw events and compare with live
    tawag apikey add --tenant T [--scope read ...]   issue a public-API key (printed once);
                            tawag apikey list; tawag apikey revoke KEY_ID

The per-process commands (ingest, streams, warehouse, connectors, demo) are what
``tawag up`` runs; ``connectors`` only when ``TAWAG_CRM_ENABLED`` names a CRM; ``api``
(the public REST API and webhooks) is started on its own.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time

from core import settings as settings_mod
from core.settings import Settings

__all__ = ["main"]


def _fail(message: str) -> int:
    print(f"tawag: {message}", file=sys.stderr)
    return 1


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from tawag.supervisor import StackError, Supervisor, serve_supervisor_metrics

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from tawag.first_run import ADMIN_NAME, ensure_dashboard_admin

    sup = Supervisor(settings)
    print(f"Starting Tawag (data in {settings.data_dir})")
    try:
        sup.start(demo=not args.no_demo)
    except StackError as exc:
        return _fail(str(exc))
    # after the start: a refused start (a stack already running) must not touch its port
    metrics = serve_supervisor_metrics(sup)
    password = ensure_dashboard_admin(settings)
    print(f"\nDashboard: http://127.0.0.1:{settings.dashboard_port}/")
    if password:
        print(f"  first start: log in as '{ADMIN_NAME}' with password {password}\n"
              f"  (shown once; stored hashed in {settings.dashboard_users_file})")
    print(f"Warehouse: {settings.warehouse_url}   (ask it with: tawag sql '<statement>')")
    print("Press Ctrl-C to stop.\n")
    if metrics is not None:
        print(f"Metrics: {metrics.url} (each component's port: README, Metrics)")
    try:
        sup.watch(stop.is_set)  # restarts what dies on its own; returns on Ctrl-C/SIGTERM
    finally:
        print("\nStopping Tawag")
        sup.stop()
        if metrics is not None:
            metrics.stop()
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    from tawag.supervisor import stop_recorded

    stopped = stop_recorded(settings)
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from tawag.supervisor import status

    rows = status(settings)
    print(f"{'component':<10} {'state':<10} {'pid':<8} {'uptime':<8} {'restarts':<8} "
          f"{'last exit':<28} ports")
    for row in rows:
        last = "-"
        if row.last_exit:
            last = f"{row.last_exit} ({_duration(time.time() - row.last_exit_at)} ago)" \
                if row.last_exit_at else row.last_exit
        uptime = _duration(row.uptime_s) if row.uptime_s is not None else "-"
        restarts = "-" if row.restarts is None else str(row.restarts)
        print(f"{row.name:<10} {row.state:<10} {row.pid or '-':<8} {uptime:<8} {restarts:<8} "
              f"{last:<28} {row.ports}")
    return 0 if all(row.up for row in rows if row.name != "demo") else 3


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def cmd_sql(settings: Settings, args: argparse.Namespace) -> int:
    import httpx

    from warehouse.users import SERVICE_USER, service_password

    try:
        resp = httpx.post(settings.warehouse_url, content=args.query.encode(),
                          params={"default_format": args.format}, timeout=60,
                          auth=(SERVICE_USER, service_password(settings.data_dir)))
    except httpx.HTTPError:
        return _fail(f"the warehouse is not answering at {settings.warehouse_url} "
                     "(start the stack with `tawag up`)")
    if resp.status_code != 200:
        return _fail(resp.text.strip())
    sys.stdout.write(resp.text)
    return 0


def _server_user(settings: Settings, statements: list[str]) -> None:
    """Apply a user's DDL on the ClickHouse server (server mode), as the writer."""
    from warehouse.client import DriverClient

    client = DriverClient(settings)
    try:
        for statement in statements:
            client.command(statement)
    finally:
        client.close()


def cmd_user(settings: Settings, args: argparse.Namespace) -> int:
    """Users live in the users file; in server mode also as ClickHouse users with a role."""
    from warehouse.client import WarehouseError
    from warehouse.server_access import drop_user_statements, user_statements
    from warehouse.users import AuthError, add_user, load_users, remove_user

    path = settings.dashboard_users_file
    try:
        if args.action == "add":
            if bool(args.admin) == bool(args.tenant):
                return _fail("user add: give exactly one of --tenant T or --admin")
            password = add_user(path, args.name, tenant=args.tenant, admin=args.admin)
            if settings.warehouse_mode == "server":
                try:
                    _server_user(settings, user_statements(
                        args.name, password, tenant=None if args.admin else args.tenant))
                except (ValueError, WarehouseError) as exc:
                    remove_user(path, args.name)
                    return _fail(f"user add: the ClickHouse server refused the user: {exc}")
            print(f"added {args.name} ({'admin' if args.admin else 'tenant ' + args.tenant})"
                  f"\npassword: {password}\n(shown once; stored hashed in {path})")
        elif args.action == "list":
            users = load_users(path) if path.exists() else {}
            print(f"{'user':<24} {'role':<12} tenant")
            for user, _ in users.values():
                print(f"{user.name:<24} {user.role:<12} {user.tenant or '*'}")
        else:
            remove_user(path, args.name)
            if settings.warehouse_mode == "server":
                _server_user(settings, drop_user_statements(args.name))
            print(f"removed {args.name}")
    except (AuthError, WarehouseError) as exc:
        return _fail(str(exc))
    return 0


def cmd_provision(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from edge import provision
    from edge.control import EdgeError

    path = Path(args.file)
    errors = provision.check(path)
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        return 1
    if args.check:
        print(f"{path}: ok")
        return 0
    try:
        states = provision.apply(settings, path)
    except provision.ProvisioningFailed as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return 1
    except EdgeError as exc:
        return _fail(f"the edge is not answering at {settings.kamailio_rpc_url} ({exc})")
    except Exception as exc:  # Kafka unreachable: applied live but not recorded
        return _fail(f"applied to the edge but not recorded in {settings.topic_provisioning}: "
                     f"{exc}")
    print(f"{path}: applied ({', '.join(sorted(states))})")
    return 0


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from tawag.migrate_cmd import PendingMigrations, migrate

    try:
        applied = migrate(settings)
    except PendingMigrations as exc:
        return _fail(str(exc))
    print("applied: " + ", ".join(applied) if applied else "the warehouse schema is up to date")
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from tawag.replay import replay

    report = replay(settings, compare_live=not args.no_compare, progress=print)
    print(report.summary())
    if args.no_compare:
        return 0
    return 0 if report.equal else 4


def cmd_apikey(settings: Settings, args: argparse.Namespace) -> int:
    """Keys of the public API (api/keys.py): stored hashed; the running API rereads them."""
    from datetime import UTC, datetime

    from api.keys import KeyError_, add_key, keys_file, list_keys, revoke_key

    path = keys_file(settings)
    try:
        if args.action == "add":
            token = add_key(path, args.tenant, tuple(args.scope or ("read",)), name=args.name)
            print(f"API key for tenant {args.tenant}: {token}\n(shown once; stored hashed "
                  f"in {path})")
        elif args.action == "list":
            print(f"{'key id':<14} {'tenant':<16} {'scopes':<32} {'created':<20} "
                  f"{'revoked':<20} name")
            for key in list_keys(path):
                def when(ts: float | None) -> str:
                    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") \
                        if ts else "-"
                print(f"{key.key_id:<14} {key.tenant:<16} {' '.join(key.scopes):<32} "
                      f"{when(key.created_at):<20} {when(key.revoked_at):<20} {key.name}")
        else:
            key = revoke_key(path, args.key_id)
            print(f"revoked {key.key_id} (tenant {key.tenant})")
    except KeyError_ as exc:
        return _fail(str(exc))
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    from api.service import run

    run(settings)
    return 0


def cmd_ingest(settings: Settings, args: argparse.Namespace) -> int:
    from ingest.service import run

    run(settings)
    return 0


def cmd_streams(settings: Settings, args: argparse.Namespace) -> int:
    from streams.app import run_worker

    run_worker(settings)
    return 0


def cmd_warehouse(settings: Settings, args: argparse.Namespace) -> int:
    from warehouse.service import run

    run(settings)
    return 0


def cmd_connectors(settings: Settings, args: argparse.Namespace) -> int:
    from connectors.service import run
    from core.tenant_crm import tenant_crms
    from edge import control as edge

    if not (settings.crm_enabled or tenant_crms(settings.provisioning_file)):
        return _fail("no CRM is enabled (set TAWAG_CRM_ENABLED, e.g. amocrm,bitrix24, or "
                     "give a tenant a [tenant.<name>.crm.<crm>] table)")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, stop=stop, edge=edge)  # the edge's control API, for click-to-call
    return 0


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from tawag.demo import run

    run(settings, calls=args.calls)
    return 0


def cmd_live(settings: Settings, args: argparse.Namespace) -> int:
    from edge.live import run

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    run(settings, stop=stop)
    return 0


PROCESS_COMMANDS = frozenset({"ingest", "streams", "warehouse", "demo", "connectors", "api",
                              "live"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tawag", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the stack in the foreground")
    up.add_argument("--no-demo", action="store_true", help="no demo traffic")
    up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the running stack").set_defaults(func=cmd_down)
    sub.add_parser("status", help="state of each component").set_defaults(func=cmd_status)
    sql = sub.add_parser("sql", help="run a read-only query on the warehouse")
    sql.add_argument("query")
    sql.add_argument("--format", default="PrettyCompactMonoBlock")
    sql.set_defaults(func=cmd_sql)
    user = sub.add_parser("user", help="manage dashboard and warehouse users")
    user_sub = user.add_subparsers(dest="action", required=True)
    add = user_sub.add_parser("add", help="add a user; prints its new password once")
    add.add_argument("name")
    add.add_argument("--tenant", help="the tenant whose rows the user reads")
    add.add_argument("--admin", action="store_true", help="reads every tenant")
    user_sub.add_parser("list", help="list the users")
    remove = user_sub.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    user.set_defaults(func=cmd_user)
    prov = sub.add_parser("provision", help="apply (or --check) a provisioning file")
    prov.add_argument("file")
    prov.add_argument("--check", action="store_true", help="only validate the file")
    prov.set_defaults(func=cmd_provision)
    sub.add_parser("migrate", help="apply the warehouse migrations (idempotent)") \
        .set_defaults(func=cmd_migrate)
    rep = sub.add_parser("replay", help="rebuild CDRs and statistics from the raw events "
                                        "into a fresh store and compare with the live one")
    rep.add_argument("--no-compare", action="store_true", help="only rebuild")
    rep.set_defaults(func=cmd_replay)
    apikey = sub.add_parser("apikey", help="manage the public API's keys")
    apikey_sub = apikey.add_subparsers(dest="action", required=True)
    key_add = apikey_sub.add_parser("add", help="issue a key; prints it once")
    key_add.add_argument("--tenant", required=True, help="the only tenant the key sees")
    key_add.add_argument("--scope", action="append", help="read (default), calls:write, "
                                                          "webhooks:write; repeatable")
    key_add.add_argument("--name", default="", help="what the key is for")
    apikey_sub.add_parser("list", help="list the keys (never the keys themselves)")
    key_revoke = apikey_sub.add_parser("revoke", help="revoke a key at once")
    key_revoke.add_argument("key_id")
    apikey.set_defaults(func=cmd_apikey)
    sub.add_parser("api", help="run the public REST API and its webhook worker") \
        .set_defaults(func=cmd_api)
    sub.add_parser("ingest", help="run the evapi -> Kafka bridge").set_defaults(func=cmd_ingest)
    sub.add_parser("streams", help="run the Faust worker").set_defaults(func=cmd_streams)
    sub.add_parser("live", help="apply the streams' routing facts to the edge's htable") \
        .set_defaults(func=cmd_live)
    sub.add_parser("warehouse", help="run the warehouse (owns the chdb store)") \
        .set_defaults(func=cmd_warehouse)
    sub.add_parser("connectors", help="run the CRM sync worker (amoCRM, Bitrix24, 1C) and "
                                      "its recording-link server").set_defaults(
        func=cmd_connectors)
    demo = sub.add_parser("demo", help="place demo calls through the edge")
    demo.add_argument("--calls", type=int, default=0, help="stop after N calls (0: forever)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The stack's processes log at INFO into var/logs; the operator's commands stay quiet.
    level = logging.INFO if args.command in PROCESS_COMMANDS else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for chatty in ("kafka", "httpx"):
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    if args.command not in PROCESS_COMMANDS:
        logging.getLogger("kafka").setLevel(logging.ERROR)
    try:
        settings = settings_mod.load()
    except (TypeError, ValueError) as exc:
        return _fail(f"bad configuration: {exc}")
    try:
        return args.func(settings, args)
    except KeyboardInterrupt:
        return 130
