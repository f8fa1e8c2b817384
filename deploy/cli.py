"""`fleet`: the one command-line entry point (DESIGN.md decision 10).

Subcommands import their packages lazily, so `fleet gateway` runs on a Raspberry Pi that has
only the `edge` extra installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from deploy.errors import DeployError
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
    from deploy.settings import load_settings
    from storage.config import DbCommandSettings
    from storage.migrate import migrate, status

    settings = load_settings(DbCommandSettings, args.config)
    if args.action == "migrate":
        report = migrate(settings.database.owner_url, log=lambda m: print(m, file=sys.stderr))
        print(f"edition {report.edition}: applied {len(report.applied)}, "
              f"already applied {report.already_applied}")
        return 0
    for m, applied in status(settings.database.owner_url):
        edition = f".{m.edition}" if m.edition else ""
        label = f"{m.version:04d}_{m.name}{edition}"
        print(f"{label:<32} {'applied' if applied else 'pending'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="fleet", description="fleet-telemetry: real-time fleet telemetry engine")
    parser.add_argument("--config", help="TOML settings file (default: $FLEET_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("services", help="run the project's own PostgreSQL, Mosquitto and Redis")
    p.add_argument("action", choices=["up", "down", "status", "env"])
    p.set_defaults(func=_services)

    p = sub.add_parser("db", help="database schema: migrate or show migration status")
    p.add_argument("action", choices=["migrate", "status"])
    p.set_defaults(func=_db)

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
]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; errors of our own print one clear line and exit 2."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except DeployError as exc:
        print(f"fleet {args.command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from storage.errors import StorageError

        if isinstance(exc, StorageError):
            print(f"fleet {args.command}: {exc}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
