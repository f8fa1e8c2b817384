"""`fleet api [--host H] [--port P]`: run the API (REST, live WebSocket, dispatcher map)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `fleet api`."""
    parser.add_argument("--host", help="listen address (default: api.host)")
    parser.add_argument("--port", type=int, help="listen port (default: api.port)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the settings, build the app and serve until SIGTERM/SIGINT (exit 0)."""
    import gc
    import logging
    import sys

    from core.stopping import StopSignals

    # Before anything else, so that a signal during start-up is a clean stop too.
    stop = StopSignals("api").install()
    log = logging.getLogger("api")
    try:
        from aiohttp import web

        from api.app import create_app
        from api.config import load_api_settings
        from core.errors import FleetError
        from core.logs import configure_logging

        try:
            settings = load_api_settings(getattr(args, "config", None))
            configure_logging("api", json_lines=settings.api.log_json)
            app = create_app(settings)
        except FleetError as exc:
            print(f"fleet api: {exc}", file=sys.stderr)
            return 2
        host = args.host or settings.api.host
        port = args.port or settings.api.port

        async def announce(_app: web.Application) -> None:
            # What start-up made (modules, settings, the pool, the route table) lives as long
            # as the process: out of the collector's sight, its full collections no longer
            # walk it every few thousand requests (the cached read's throughput rose by a
            # fifth and steadied, docs/api.md).
            gc.collect()
            gc.freeze()
            # After the app's start-up (database pool, live hub): only a started API says so.
            print(f"fleet api: serving on http://{host}:{port}/", file=sys.stderr, flush=True)

        app.on_startup.append(announce)
        try:
            stop.serve(web.run_app, app, log, host=host, port=port, access_log=None,
                       print=None, shutdown_timeout=5)
        except FleetError as exc:
            # Start-up found the database unreachable (the pool is opened in the app's
            # start-up): one line, no traceback. Redis may be down: the API then serves
            # REST, reports not ready and reconnects.
            print(f"fleet api: {exc}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        stop.report(log)  # a signal while starting: nothing to shut down yet
    return 0
