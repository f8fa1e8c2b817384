"""`fleet sim`: device simulators for one vehicle, the MQTT load generator, vendor mocks.

    fleet sim vehicle [--seed N] [--elm327] [--can slcan|INTERFACE:CHANNEL] [--gps]
                      [--fault KIND@START_S+DURATION_S ...] [--route FILE.geojson]
    fleet sim fleet (--vehicles N | --codes A,B,...) --tenant T [--mqtt URL]
                    [--rate-hz R] [--batch-size B] [--duration-s S] [--seed-db]
    fleet sim samsara ... / fleet sim smartcar ...   (when those mocks are installed)

Only the standard library is imported here; the simulators load when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.stopping import StopSignals

VENDOR_MOCKS = (
    ("samsara", "simulators.samsara", "mock Samsara API server"),
    ("smartcar", "simulators.smartcar", "mock Smartcar API server"),
)


def register(parser: argparse.ArgumentParser) -> None:
    """Add the `sim` sub-commands."""
    sub = parser.add_subparsers(dest="sim_command", required=True, metavar="SIMULATOR")

    p = sub.add_parser("vehicle", help="one simulated vehicle behind ELM327, CAN and GPS ports")
    p.add_argument("--seed", type=int, default=1, help="vehicle seed (default 1)")
    p.add_argument("--elm327", action="store_true", help="serve an ELM327 adapter on a pty")
    p.add_argument("--can", metavar="slcan|INTERFACE:CHANNEL",
                   help="CAN front-end: an SLCAN adapter on a pty, or a python-can bus such "
                        "as socketcan:vcan0 (the virtual bus is in-process only)")
    p.add_argument("--gps", action="store_true", help="serve an NMEA GPS on a pty")
    p.add_argument("--fault", action="append", default=[], metavar="KIND@START_S+DURATION_S",
                   help="scripted fault, repeatable (e.g. overheat@60+300); see "
                        "docs/simulators.md")
    p.add_argument("--route", metavar="FILE", help="GeoJSON LineString route(s) to drive")
    p.add_argument("--link-dir", metavar="DIR",
                   help="also create stable symlinks DIR/elm327, DIR/can, DIR/gps")
    p.add_argument("--speedup", type=float, default=1.0,
                   help="simulated seconds per wall-clock second (default 1)")
    p.add_argument("--duration-s", type=float, help="stop after this many seconds")
    p.set_defaults(func=_run_vehicle)

    p = sub.add_parser("fleet", help="many simulated vehicles publishing straight to MQTT")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--vehicles", type=int, help="number of vehicles (codes sim-00000, ...)")
    who.add_argument("--codes", help="comma-separated vehicle codes")
    p.add_argument("--tenant", required=True, help="tenant slug (topic id)")
    p.add_argument("--mqtt", metavar="URL", help="broker URL (default: mqtt.url setting)")
    p.add_argument("--rate-hz", type=float, help="samples per vehicle per second")
    p.add_argument("--batch-size", type=int, help="samples per message")
    p.add_argument("--duration-s", type=float, help="stop after this many seconds")
    p.add_argument("--connections", type=int, help="MQTT connections to spread vehicles over")
    p.add_argument("--faults-per-hour", type=float, help="random faults per vehicle and hour")
    p.add_argument("--seed", type=int, default=0, help="fleet seed (default 0)")
    p.add_argument("--prefix", default="sim", help="vehicle code prefix with --vehicles")
    p.add_argument("--seed-db", action="store_true",
                   help="insert the tenant and vehicles first (database.owner_url setting)")
    p.set_defaults(func=_run_fleet)

    for name, module, help_text in VENDOR_MOCKS:
        if importlib.util.find_spec(module) is None:
            continue  # another part of the project provides it; not installed here
        p = sub.add_parser(name, help=help_text)
        importlib.import_module(module).register(p)


def _fail(message: str) -> int:
    print(f"fleet sim: {message}", file=sys.stderr)
    return 2


def _run_vehicle(args: argparse.Namespace) -> int:
    import threading
    from contextlib import ExitStack, suppress
    from pathlib import Path

    from core.stopping import StopSignals
    from simulators.errors import SimulatorError
    from simulators.roads import GeoJsonRoutes
    from simulators.runner import RealtimeDriver
    from simulators.vehicle import Fault, VehicleModel

    # The first signal raises KeyboardInterrupt wherever the main thread is; the ExitStack
    # then closes whatever front-end was already open, ptys and threads included.
    stop = StopSignals("sim vehicle").install()
    try:
        faults = [Fault.parse(spec) for spec in args.fault]
        route = GeoJsonRoutes.load(args.route) if args.route else None
        if not (args.elm327 or args.can or args.gps):
            return _fail("choose at least one of --elm327, --can, --gps")
        model = VehicleModel(args.seed, route=route, faults=faults, warm_engine=True)
        link_dir = Path(args.link_dir) if args.link_dir else None
        if link_dir:
            link_dir.mkdir(parents=True, exist_ok=True)
        with ExitStack() as stack:
            ports = _start_front_ends(args, model, link_dir, stack)
            stack.enter_context(RealtimeDriver(model, step_s=0.1, speedup=args.speedup))
            print(f"vehicle seed={args.seed} vin={model.vin}", flush=True)
            print("ready " + " ".join(f"{k}={v}" for k, v in ports.items()), flush=True)
            # Stopped: the front-ends close, and the ground truth is printed below.
            with suppress(KeyboardInterrupt):
                threading.Event().wait(args.duration_s)
        for truth in model.ground_truth:
            print(f"fault {truth.kind} start_ms={truth.start_ms} end_ms={truth.end_ms} "
                  f"details={truth.details}", flush=True)
    except SimulatorError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        pass  # stopped while starting
    if stop.signum is not None:
        stop.report()
    return 0


def _start_front_ends(args: argparse.Namespace, model: Any, link_dir: Any,
                      stack: Any) -> dict[str, str]:
    # Each front-end's module is imported only when it is asked for: the ELM327 and CAN ones
    # need cantools (and python-can), which only the `edge` extra installs.
    from simulators.errors import SimulatorError

    ports: dict[str, str] = {}

    def link(name: str) -> Any:
        return link_dir / name if link_dir else None

    if args.elm327:
        from simulators.elm327 import Elm327Emulator

        ports["elm327"] = stack.enter_context(Elm327Emulator(model, link_path=link("elm327")))
    if args.can:
        from simulators.can_bus import CanSimulator, SlcanAdapter

        if args.can == "slcan":
            ports["can"] = stack.enter_context(SlcanAdapter(model, link_path=link("can")))
        else:
            interface, _, channel = args.can.partition(":")
            if not channel:
                raise SimulatorError(f"--can {args.can!r}: expected slcan or INTERFACE:CHANNEL")
            stack.enter_context(CanSimulator(model, interface=interface, channel=channel))
            ports["can"] = f"{interface}:{channel}"
    if args.gps:
        from simulators.nmea import NmeaGps

        ports["gps"] = stack.enter_context(NmeaGps(model, link_path=link("gps")))
    return ports


def _run_fleet(args: argparse.Namespace) -> int:
    import asyncio

    from core.errors import FleetError
    from core.settings import load_settings
    from core.stopping import StopSignals
    from simulators.config import SimSettings
    from simulators.load import LoadConfig, LoadGenerator, vehicle_codes

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    stop = StopSignals("sim fleet").install()  # replaced by loop handlers once it runs
    try:
        settings = load_settings(SimSettings, args.config)
        d = settings.sim
        codes = ([c.strip() for c in args.codes.split(",") if c.strip()] if args.codes
                 else vehicle_codes(args.vehicles, prefix=args.prefix))
        config = LoadConfig(
            mqtt_url=args.mqtt or settings.mqtt.url, tenant=args.tenant, codes=codes,
            rate_hz=pick(args.rate_hz, d.rate_hz), batch_size=pick(args.batch_size, d.batch_size),
            duration_s=args.duration_s, seed=args.seed,
            connections=pick(args.connections, d.connections), max_inflight=d.max_inflight,
            faults_per_vehicle_hour=pick(args.faults_per_hour, d.faults_per_vehicle_hour),
            progress_interval_s=d.progress_interval_s)
        generator = LoadGenerator(config, log=lambda line: print(line, flush=True))
        if args.seed_db:
            from simulators.seed import seed_simulated_fleet  # needs psycopg (server install)

            vins = {v.code: v.model.vin for v in generator.vehicles}
            seed_simulated_fleet(settings.database.owner_url, args.tenant, codes, vins=vins)
            print(f"seeded tenant {args.tenant} with {len(codes)} vehicles", flush=True)
        print(f"publishing {len(codes)} vehicles at {config.rate_hz} Hz, "
              f"{config.batch_size} samples/message", flush=True)
        report = asyncio.run(_run_until_signalled(generator, stop))
    except FleetError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        report = None  # stopped before the loop ran
    if report is not None:
        print(f"sent {report.ledger.samples} samples in {report.ledger.messages} messages, "
              f"{report.samples_per_s:.0f} samples/s, max lag {report.max_lag_s:.2f} s",
              flush=True)
    if stop.signum is not None:
        stop.report()
    return 0 if report is None or report.ledger.failed_messages == 0 else 1


async def _run_until_signalled(generator: Any, stop: StopSignals) -> Any:
    """Run the load generator; the first SIGINT/SIGTERM stops it gracefully (it flushes what
    it holds), a second one at once (then there is no report: None)."""
    import asyncio

    task = asyncio.create_task(generator.run())
    stop.install_on_loop(asyncio.get_running_loop(), generator.stop, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        if stop.signum is None:
            raise
        return None
