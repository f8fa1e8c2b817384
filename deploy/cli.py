"""`fleet`: the one command-line entry point (DESIGN.md decision 10).

Subcommands import their packages lazily, so `fleet gateway` runs on a Raspberry Pi that has
only the `edge` extra installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from core.errors import FleetError
from deploy.optional import module_available


def _services(args: argparse.Namespace) -> int:
    from deploy.services import local_services

    services = local_services(args.config, log=lambda m: print(m, file=sys.stderr))
    if args.action == "up":
        services.up()
        args.action = "status"
    if args.action == "down":
        services.down()
        return 0
    if args.action == "env":
        for key, value in services.env().items():
            print(f"{key}={_shell_quote(value)}")
        return 0
    healthy = True
    for st in services.status():
        mark = "healthy" if st.healthy else ("unhealthy" if st.running else "stopped")
        print(f"{st.name:<10} {mark:<10} {st.url:<34} {st.detail}")
        healthy &= st.healthy
    return 0 if healthy else 1


def _shell_quote(value: str) -> str:
    import shlex

    return shlex.quote(value)


def _db(args: argparse.Namespace) -> int:
    from core.settings import load_settings
    from storage.config import DbCommandSettings
    from storage.migrate import migrate, status

    settings = load_settings(DbCommandSettings, args.config)
    owner_url = settings.database.owner_url
    if args.action == "migrate":
        report = migrate(owner_url, log=lambda m: print(m, file=sys.stderr))
        print(f"edition {report.edition}: applied {len(report.applied)}, "
              f"already applied {report.already_applied}")
        return 0
    if args.action == "refresh-rollups":
        from storage.admin import refresh_rollups

        print(f"refreshing rollups {args.start.isoformat()} .. {args.end.isoformat()}",
              file=sys.stderr)
        refresh_rollups(owner_url, args.start, args.end)
        print("refreshed", file=sys.stderr)
        return 0
    if args.action == "analyst":
        return _db_analyst(args, owner_url)
    for m, applied in status(owner_url):
        edition = f".{m.edition}" if m.edition else ""
        label = f"{m.version:04d}_{m.name}{edition}"
        print(f"{label:<32} {'applied' if applied else 'pending'}")
    return 0


def _db_analyst(args: argparse.Namespace, owner_url: str) -> int:
    from storage.admin import create_analyst, drop_analyst, list_analysts

    if args.analyst_action == "create":
        password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
        password = create_analyst(owner_url, args.role, args.tenant, password)
        print(f"analyst {args.role} reads tenant {args.tenant}", file=sys.stderr)
        if not args.password_stdin:
            print(password)  # stdout: the one place the generated password is shown
    elif args.analyst_action == "drop":
        drop_analyst(owner_url, args.role)
        print(f"analyst {args.role} dropped", file=sys.stderr)
    else:
        for a in list_analysts(owner_url):
            print(f"{a.role:<32} {a.tenant_slug:<24} {a.created_at:%Y-%m-%d %H:%M}")
    return 0


def _timestamp(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _db_parser(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("migrate", help="apply pending migrations (as the owner role)")
    actions.add_parser("status", help="list migrations, applied or pending")
    r = actions.add_parser("refresh-rollups",
                           help="recompute telemetry_1m/1h for a time range, on either edition")
    r.add_argument("--from", dest="start", type=_timestamp, required=True,
                   help="ISO 8601 start (UTC unless a zone is given)")
    r.add_argument("--to", dest="end", type=_timestamp, required=True, help="ISO 8601 end")
    a = actions.add_parser("analyst", help="read-only SQL logins, one tenant each")
    verbs = a.add_subparsers(dest="analyst_action", required=True, metavar="VERB")
    c = verbs.add_parser("create", help="create a login bound to one tenant; prints its password")
    c.add_argument("role", help="login name (lower case, not fleet_* or pg_*)")
    c.add_argument("--tenant", required=True, help="tenant slug")
    c.add_argument("--password-stdin", action="store_true",
                   help="read the password from stdin instead of generating one")
    d = verbs.add_parser("drop", help="drop an analyst login")
    d.add_argument("role")
    verbs.add_parser("list", help="analyst logins and their tenants")
    p.set_defaults(func=_db)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="fleet", description="fleet-telemetry: real-time fleet telemetry engine")
    parser.add_argument("--config", help="TOML settings file (default: $FLEET_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("services", help="run the project's own PostgreSQL, Mosquitto and Redis")
    p.add_argument("action", choices=["up", "down", "status", "env"])
    p.set_defaults(func=_services)

    _db_parser(sub.add_parser(
        "db", help="database: migrate, migration status, rollup refresh, analyst logins"))

    for name, module, help_text in SUBCOMMANDS:
        if not module_available(module):
            continue  # not built yet, or not part of this install
        p = sub.add_parser(name, help=help_text)
        importlib.import_module(module).register(p)
    return parser


# Subcommands that live in their own packages. Each module imports only the standard library at
# import time and defines `register(parser)`, which adds its options and sets `func`.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("gateway", "edge_gateway.cli", "run the in-vehicle gateway (OBD-II, CAN, GPS -> MQTT)"),
    ("stream", "stream.cli", "run the stream processor (MQTT -> detectors -> TimescaleDB)"),
    ("api", "api.cli", "run the REST and WebSocket API with the dispatcher map"),
    ("sim", "simulators.cli", "device simulators, load generator and vendor mock servers"),
    ("demo", "deploy.demo", "the whole stack with a simulated fleet on this machine"),
    ("bench", "deploy.bench", "benchmarks; each prints one JSON object as its last line"),
    ("audit", "api.audit_cli", "verify the hash-chained audit log"),
    ("archive", "api.jobs.archive_cli", "cold archive in Azure Blob: list, restore a day"),
    ("broker", "api.broker_cli", "device logins on a dynamic-security broker: prune strays"),
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors of our own print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except FleetError as exc:
        # Any package's error: one clear line. Anything else is a bug and keeps its traceback.
        print(f"fleet {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
