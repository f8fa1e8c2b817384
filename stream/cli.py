"""`fleet stream`: run the stream processor (a Bytewax cluster of P processes x W workers).

With ``--processes 1`` the dataflow runs in this process. With more, this process is a
supervisor: it starts the cluster's processes (``python -m stream.cli --process-id i``),
which find each other on 127.0.0.1 ports ``stream.process_base_port + i``; when one ends, the
others are stopped too, because a Bytewax cluster fails and resumes as a whole.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any


def register(parser: argparse.ArgumentParser) -> None:
    """Add the options of `fleet stream`."""
    parser.add_argument("--workers", type=int, help="Bytewax workers per process "
                        "(default: stream.workers_per_process)")
    parser.add_argument("--processes", type=int, help="processes in the local cluster "
                        "(default: stream.processes)")
    parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--recovery-dir", help="Bytewax recovery directory "
                        "(default: stream.recovery_dir; '' disables recovery)")
    parser.add_argument("--partitions", type=int, help="MQTT source partitions "
                        "(default: source.partitions)")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> Any:
    import msgspec

    from deploy.settings import load_settings
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
    """Run the stream until it is stopped (SIGINT/SIGTERM) or fails."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from deploy.errors import DeployError
    from stream.errors import StreamError

    try:
        settings = _settings(args)
        from stream.runner import ensure_recovery_dir

        ensure_recovery_dir(settings.stream)
        if settings.stream.processes > 1 and args.process_id is None:
            return _supervise(args, settings.stream.processes)
        from stream.runner import run_stream

        _stop_on_sigterm()
        try:
            run_stream(settings, process_id=args.process_id)
        except KeyboardInterrupt:
            # The normal way to stop (SIGINT or SIGTERM): not an error, so no traceback. What
            # was in flight was not acknowledged and comes again from the inbox on restart.
            logging.getLogger("stream").info("stream stopped by signal")
    except (StreamError, DeployError) as exc:
        print(f"fleet stream: {exc}", file=sys.stderr)
        return 2
    return 0


def _stop_on_sigterm() -> None:
    def handler(_sig: int, _frame: Any) -> None:
        # Bytewax checks for Python signals while it runs and stops on KeyboardInterrupt.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _child_argv(args: argparse.Namespace, process_id: int, processes: int) -> list[str]:
    argv = [sys.executable, "-m", "stream.cli", "--process-id", str(process_id),
            "--processes", str(processes)]
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


def _supervise(args: argparse.Namespace, processes: int) -> int:
    children = [subprocess.Popen(_child_argv(args, i, processes), preexec_fn=_die_with_parent)  # noqa: PLW1509
                for i in range(processes)]
    stopping = False

    def stop(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while not stopping:
        done = [c for c in children if c.poll() is not None]
        if done:
            code = done[0].returncode or 0
            break
        time.sleep(0.2)
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for c in children:
        try:
            c.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    return code


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
