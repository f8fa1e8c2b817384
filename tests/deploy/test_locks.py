"""The dependency locks: what pyproject.toml resolves to, one version per package across the
profiles, a gateway profile without server libraries that installs on a Raspberry Pi, and the
import contract that keeps the gateway's code as light as its profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from deploy.install.check_pi import locked_blocks, pins

REPO = Path(__file__).resolve().parents[2]
LOCKS = REPO / "requirements"
PROFILES = ("dev", "server", "gateway")
# What only the server side needs (import names differ from distribution names for some).
SERVER_ONLY = ("bytewax", "aiohttp", "asyncpg", "psycopg", "psycopg-binary", "psycopg-pool",
               "shapely", "numpy", "redis", "pyarrow", "azure-storage-blob", "azure-core",
               "pyjwt", "argon2-cffi", "cryptography", "prometheus-client")
UV = str(Path(sys.executable).parent / "uv")


def test_committed_locks_are_what_pyproject_resolves_to(tmp_path: Path) -> None:
    # The script `make lock` runs, into a scratch copy: with the committed pins as preferences
    # it must change nothing, or pyproject.toml moved without `make lock`.
    for profile in PROFILES:
        shutil.copy(LOCKS / f"{profile}.txt", tmp_path / f"{profile}.txt")
    subprocess.run(["bash", str(REPO / "deploy/install/lock.sh"), str(tmp_path)], cwd=REPO,
                   env={**os.environ, "UV": UV}, check=True, timeout=300)
    for profile in PROFILES:
        assert locked_blocks(tmp_path / f"{profile}.txt") == \
            locked_blocks(LOCKS / f"{profile}.txt"), f"{profile}.txt is stale: run `make lock`"


def test_every_lock_pins_with_hashes_and_the_profiles_agree() -> None:
    dev = pins((LOCKS / "dev.txt").read_text())
    for profile in PROFILES:
        blocks = locked_blocks(LOCKS / f"{profile}.txt")
        assert blocks, profile
        assert all("--hash=sha256:" in block for block in blocks.values()), profile
        for name, version in pins("".join(blocks.values())).items():
            assert dev[name] == version, (profile, name)
    # The tools that judge the code are locked, so a new release never reds a build.
    assert {"ruff", "mypy", "import-linter", "uv", "setuptools"} <= dev.keys()


def test_the_gateway_profile_has_no_server_library() -> None:
    gateway = pins((LOCKS / "gateway.txt").read_text())
    assert {"aiomqtt", "python-can", "cantools", "pynmea2", "pyserial", "obd",
            "msgspec"} <= gateway.keys()
    assert not [name for name in SERVER_ONLY if name in gateway]
    assert "rtree" not in pins((LOCKS / "dev.txt").read_text())


def test_the_gateway_lock_installs_on_a_raspberry_pi() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "deploy/install/check_pi.py")], cwd=REPO,
                          env={**os.environ, "UV": UV}, capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1. uv resolves the gateway for aarch64" in proc.stdout
    assert "2. aarch64:" in proc.stdout
    assert "3. armv7l:" in proc.stdout


def test_import_contracts_hold() -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
                          cwd=REPO, capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
