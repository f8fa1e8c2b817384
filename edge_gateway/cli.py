"""`fleet gateway`: run the in-vehicle gateway.

Settings come from the TOML file (`--config`, a `fleet` option, or the subcommand's own
`--config`) and `FLEET_*` variables; the flags below override single keys for a quick start.
Only the standard library is imported at module level (the `fleet` CLI loads every
subcommand module).
"""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    """Add the gateway's options to its sub-parser."""
    parser.add_argument("--config", dest="gateway_config", metavar="FILE",
                        help="TOML settings file (sections gateway, mqtt, obd, can, gps, power)")
    parser.add_argument("--obd", metavar="PORT", help="ELM327 serial port (obd.port)")
    parser.add_argument("--can-interface", help="python-can interface (can.interface)")
    parser.add_argument("--can-channel", help="CAN channel (can.channel)")
    parser.add_argument("--can-bitrate", type=int, help="CAN bit rate (can.bitrate)")
    parser.add_argument("--dbc", metavar="FILE", action="append",
                        help="DBC file, repeatable (can.dbc_files; default: the shipped ones)")
    parser.add_argument("--gps", metavar="PORT", help="NMEA GPS serial port (gps.port)")
    parser.add_argument("--gps-baudrate", type=int, help="GPS baud rate (gps.baudrate)")
    parser.add_argument("--mqtt", metavar="URL", help="broker URL mqtt[s]://user:pw@host:port")
    parser.add_argument("--tenant", help="tenant id (gateway.tenant)")
    parser.add_argument("--vehicle", help="vehicle code (gateway.vehicle)")
    parser.add_argument("--spool", metavar="PATH", help="spool database (gateway.spool_path)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.set_defaults(func=run)


def load(args: argparse.Namespace) -> object:
    """The validated settings from file, environment and flags."""
    from core.settings import load_settings
    from edge_gateway.config import GatewayProcessSettings, apply_overrides

    config = getattr(args, "gateway_config", None) or getattr(args, "config", None)
    settings = load_settings(GatewayProcessSettings, config)
    return apply_overrides(
        settings,
        gateway={"tenant": args.tenant, "vehicle": args.vehicle, "spool_path": args.spool},
        mqtt={"url": args.mqtt},
        obd={"port": args.obd},
        can={"interface": args.can_interface, "channel": args.can_channel,
             "bitrate": args.can_bitrate, "dbc_files": args.dbc},
        gps={"port": args.gps, "baudrate": args.gps_baudrate},
    )


def run(args: argparse.Namespace) -> int:
    """Run the gateway until SIGINT/SIGTERM (exit 0); exit 2 on a settings or start-up error."""
    import asyncio
    import contextlib
    import logging

    from core.errors import FleetError
    from core.logs import configure_logging
    from core.stopping import StopSignals
    from edge_gateway.errors import GatewayError

    # Before anything else, so that a signal during start-up is a clean stop too.
    stop = StopSignals("gateway").install()
    configure_logging("gateway", level=args.log_level)
    log = logging.getLogger("edge_gateway")
    try:
        settings = load(args)
        from edge_gateway.config import GatewayProcessSettings
        from edge_gateway.gateway import Gateway

        if not isinstance(settings, GatewayProcessSettings):
            raise TypeError("settings")
        gateway = Gateway(settings)
    except FleetError as exc:
        print(f"fleet gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        stop.report(log)
        return 0

    async def main() -> None:
        task = asyncio.create_task(gateway.run())
        # First signal: graceful (drain in-flight PUBACKs); a second one: stop at once.
        stop.install_on_loop(asyncio.get_running_loop(), gateway.request_stop, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    failure: BaseException | None = None
    try:
        try:
            asyncio.run(main())
        except* GatewayError as group:
            failure = group.exceptions[0]
    except KeyboardInterrupt:
        pass  # a signal before main() moved the handlers onto the loop: stopped all the same
    if failure is not None:
        print(f"fleet gateway: {failure}", file=sys.stderr)
        return 1
    stop.report(log)
    return 0
