"""The `fleet` entry point: every subcommand listed, and none of them drags in server libraries
just to build the parser (a Raspberry Pi has only the `edge` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("aiohttp", "bytewax", "numpy", "psycopg", "asyncpg", "shapely", "redis",
               "pyarrow", "azure", "rtree", "obd")


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60).stdout
    for command in ("services", "db", "gateway", "stream", "api", "sim", "demo", "bench",
                    "audit", "archive"):
        assert f"    {command} " in out, command


def test_building_the_parser_imports_no_server_library() -> None:
    probe = ("import sys; from deploy.cli import build_parser; build_parser(); "
             f"print([m for m in {SERVER_ONLY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_a_bad_setting_is_one_clear_line_and_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "deploy.cli", "db", "status"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False,
                          env={"PATH": "/usr/bin:/bin",
                               "FLEET_DATABASE_CONNECT_TIMEOUT_S": "soon"})
    assert proc.returncode == 2
    assert "connect_timeout_s" in proc.stderr
    assert "Traceback" not in proc.stderr
