"""`fleet stream`: run the stream processor (a Bytewax cluster of P processes x W workers).

With ``--processes 1`` the dataflow runs in this process. With more, this process is a
supervisor: it starts the cluster's processes (``python -m stream.cli --process-id i``),
which find each other on 127.0.0.1 ports ``stream.process_base_port + i``; when one ends, the
others are stopped too, because a Bytewax cluster fails and resumes as a whole.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.stopping import StopSignals


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `fleet stream`."""
    parser.add_argument("--workers", type=int, help="Bytewax workers per process "
                        "(default: stream.workers_per_process)")
    parser.add_argument("--processes", type=int, help="processes in the local cluster "
                        "(default: stream.processes)")
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--recovery-dir", help="Bytewax recovery directory "
                        "(default: stream.recovery_dir; '' disables recovery)")
    parser.add_argument("--partitions", type=int, help="MQTT source partitions "
                        "(default: source.partitions)")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Any:
    import msgspec

    from core.settings import load_settings
    from stream.config import StreamSettings

    settings = load_settings(StreamSettings, getattr(args, "config", None))
    dataflow, source = settings.stream, settings.source
    if args.workers is not None:
        dataflow = msgspec.structs.replace(dataflow, workers_per_process=args.workers)
    if args.processes is not None:
        dataflow = msgspec.structs.replace(dataflow, processes=args.processes)
    if args.recovery_dir is not None:
        dataflow = msgspec.structs.replace(dataflow, recovery_dir=args.recovery_dir)
    if args.partitions is not None:
        source = msgspec.structs.replace(source, partitions=args.partitions)
    return msgspec.structs.replace(settings, stream=dataflow, source=source)


def run(args: argparse.Namespace) -> int:
    """Run the stream until it is stopped (SIGTERM/SIGINT: exit 0) or fails."""
    from core.logs import configure_logging
    from core.stopping import StopSignals

    # First, so that a signal during start-up is a clean stop too.
    stop = StopSignals("stream").install()
    configure_logging("stream")
    log = logging.getLogger("stream")
    from core.errors import FleetError

    try:
        settings = _settings(args)
        from stream.runner import ensure_recovery_dir

        ensure_recovery_dir(settings.stream)
        if settings.stream.processes > 1 and args.process_id is None:
            _check_cluster_ports(settings.stream)
            return _supervise(args, settings.stream.processes, stop)
        from stream.runner import run_stream

        run_stream(settings, process_id=args.process_id)
    except KeyboardInterrupt:
        # The normal way to stop: the workers left their loop and closed the sources (MQTT
        # sessions stay, unacknowledged messages come again) and sinks. What was in flight
        # is in the inbox and is replayed from the last snapshot on restart (docs/stream.md).
        pass
    except Exception as exc:
        # A part that cannot start (the broker or the database unreachable, bad settings)
        # says so in one line. Bytewax wraps what a source or sink raised in its own
        # runtime error, so the cause is looked for along the chain.
        cause = _first_of(exc, (FleetError,))
        if cause is None:
            raise
        print(f"fleet stream: {cause}", file=sys.stderr)
        return 2
    if args.supervised:
        return 0  # the supervisor reports the stop of the whole cluster, once
    stop.report(log)
    return 0


def _first_of(exc: BaseException, kinds: tuple[type[BaseException], ...]
              ) -> BaseException | None:
    """The first exception of `kinds` along `exc`'s chain of causes."""
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        if isinstance(at, kinds):
            return at
        seen.add(id(at))
        at = at.__cause__ or at.__context__
    return None


def _check_cluster_ports(cfg: Any) -> None:
    """Refuse to start a cluster whose exchange ports are taken, naming them and the setting.

    Otherwise a process that cannot bind ends with Bytewax's "failed to initialize
    networking" trace and takes the cluster down with it.
    """
    from core.ports import busy_ports
    from stream.errors import StreamConfigError

    ports = range(cfg.process_base_port, cfg.process_base_port + cfg.processes)
    busy = busy_ports(ports)
    if busy:
        listed = ", ".join(f"127.0.0.1:{p}" for p in busy)
        raise StreamConfigError(
            f"the cluster's exchange port(s) {listed} are in use; stop what listens there or "
            f"choose another stream.process_base_port (now {cfg.process_base_port})")


def _child_argv(args: argparse.Namespace, process_id: int, processes: int) -> list[str]:
    argv = [sys.executable, "-m", "stream.cli", "--process-id", str(process_id),
            "--processes", str(processes), "--supervised"]
    if getattr(args, "config", None):
        argv += ["--config", args.config]
    for flag, value in (("--workers", args.workers), ("--recovery-dir", args.recovery_dir),
                        ("--partitions", args.partitions)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def _die_with_parent() -> None:
    # Linux: a child of a supervisor killed with SIGKILL must not live on as an orphan that
    # still holds MQTT sessions and cluster ports.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _supervise(args: argparse.Namespace, processes: int, stop: StopSignals) -> int:
    log = logging.getLogger("stream")
    # The supervisor only waits: a signal is just recorded (no exception in the middle of
    # starting or reaping a child), and the loop below notices it.
    stop.install(lambda: None)
    children = [subprocess.Popen(_child_argv(args, i, processes), preexec_fn=_die_with_parent)  # noqa: PLW1509
                for i in range(processes)]
    code = 0
    while stop.signum is None:
        done = [c for c in children if c.poll() is not None]
        if done:
            code = done[0].returncode or 0
            log.warning("stream process %d ended (exit %d): stopping the cluster",
                        children.index(done[0]), done[0].returncode)
            break
        time.sleep(0.2)
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for i, c in enumerate(children):
        with contextlib.suppress(subprocess.TimeoutExpired):
            c.wait(max(0.1, deadline - time.monotonic()))
        if c.poll() is None:
            log.error("stream process %d did not stop within %.0f s: killed", i,
                      _STOP_TIMEOUT_S)
            c.kill()
            c.wait()
            code = code or 1
        elif stop.signum is not None and c.returncode != 0:
            log.error("stream process %d exited %d while stopping", i, c.returncode)
            code = code or 1
    if stop.signum is not None and code == 0:
        stop.report(log)
    return code


_STOP_TIMEOUT_S = 15.0
"""How long the cluster's processes get to stop after SIGTERM before SIGKILL."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the cluster's child processes (``python -m stream.cli``)."""
    parser = argparse.ArgumentParser(prog="python -m stream.cli")
    parser.add_argument("--config")
    register(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
