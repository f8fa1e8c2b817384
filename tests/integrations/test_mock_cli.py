"""`fleet sim samsara|smartcar` start their servers from their register()/run() entry points."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from core.ports import free_port as _free_port

SCRIPT = """
import argparse, sys
from simulators import {mod} as m
p = argparse.ArgumentParser()
m.register(p)
args = p.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@pytest.mark.parametrize(("mod", "path", "headers", "expect"), [
    ("samsara", "/fleet/vehicles", {"Authorization": "Bearer samsara-mock-token"}, 200),
    ("samsara", "/fleet/vehicles", {}, 401),
    ("smartcar", "/v2.0/vehicles", {"Authorization": "Bearer nope"}, 401),
])
def test_mock_serves(mod: str, path: str, headers: dict[str, str], expect: int) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT.format(mod=mod), "--port", str(port),
                             "--error-rate", "0"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        while True:
            try:
                with urllib.request.urlopen(request, timeout=5) as r:  # noqa: S310 - local
                    status = r.status
            except urllib.error.HTTPError as err:
                status = err.code
            except urllib.error.URLError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "mock did not start"
                time.sleep(0.1)
                continue
            assert status == expect
            break
    finally:
        proc.terminate()
        proc.wait(10)
