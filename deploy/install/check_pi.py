"""Checks, without a Raspberry Pi, that requirements/gateway.txt installs on one.

Run by `make check-pi` and by tests/deploy/test_locks.py; needs PyPI. Three checks:

1. uv resolves the gateway's dependencies (the `edge` and `obd` extras) for 64-bit Raspberry
   Pi OS Bookworm (aarch64, glibc 2.36, CPython 3.11) to exactly the versions in the lock.
2. pip downloads every locked package for that platform as a wheel, hash-checked against the
   lock: nothing has to compile on the Pi.
3. 32-bit Raspberry Pi OS (armv7l): each package either has a wheel for it, or its source
   distribution is in the lock (hash-checked download) and builds on the Pi; those are listed.

Exit status 0 when all three hold; the report says what was found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "gateway.txt"
AARCH64_TAGS = ("manylinux_2_36_aarch64", "manylinux_2_28_aarch64", "manylinux_2_17_aarch64",
                "manylinux2014_aarch64", "linux_aarch64")
ARMV7_TAGS = ("manylinux_2_36_armv7l", "manylinux_2_31_armv7l", "manylinux_2_17_armv7l",
              "manylinux2014_armv7l", "linux_armv7l")
TARGET = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)")


def canonical(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_blocks(lock: Path) -> dict[str, str]:
    """Each locked package's requirement block (the pin and its hashes), by package name."""
    blocks: dict[str, str] = {}
    current = ""
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match:
            current = canonical(match[1])
            blocks[current] = line + "\n"
        elif current and line.startswith("    --hash="):
            blocks[current] += line + "\n"
        else:
            current = ""
    return blocks


def pins(text: str) -> dict[str, str]:
    """Package name -> version of every pin in a requirements text."""
    return {canonical(m[1]): m[2] for m in map(_PIN.match, text.splitlines()) if m}


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False,
                          timeout=600)


def pip_download(requirements: str, scratch: Path,
                 extra: list[str]) -> subprocess.CompletedProcess[str]:
    req = scratch / "req.txt"
    req.write_text(requirements)
    return run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                "--require-hashes", "-r", str(req), "-d", str(scratch / "files"), *extra])


def platform_args(tags: tuple[str, ...]) -> list[str]:
    return [arg for tag in tags for arg in ("--platform", tag)]


def main() -> int:
    uv = os.environ.get("UV", str(REPO / ".venv" / "bin" / "uv"))
    blocks = locked_blocks(LOCK)
    failures: list[str] = []

    resolved = run([uv, "pip", "compile", "pyproject.toml", "--extra", "edge", "--extra", "obd",
                    "-c", str(LOCK), "--python-platform", "aarch64-manylinux_2_36",
                    "--python-version", "3.11", "--quiet", "--no-header", "--no-annotate"])
    if resolved.returncode != 0:
        failures.append(f"uv could not resolve for aarch64: {resolved.stderr.strip()}")
    else:
        if pins(resolved.stdout) != pins("".join(blocks.values())):
            failures.append(f"aarch64 resolution {pins(resolved.stdout)} differs from the lock")
        print(f"1. uv resolves the gateway for aarch64-manylinux_2_36 / CPython 3.11: "
              f"{len(pins(resolved.stdout))} packages, the lock's versions")

    with tempfile.TemporaryDirectory() as tmp:
        got = pip_download("".join(blocks.values()), Path(tmp),
                           ["--only-binary=:all:", *platform_args(AARCH64_TAGS), *TARGET])
        files = sorted(p.name for p in (Path(tmp) / "files").glob("*"))
        if got.returncode != 0:
            failures.append(f"aarch64 wheels: {got.stderr.strip()}")
        else:
            native = [f.split("-")[0] for f in files if "aarch64" in f]
            print(f"2. aarch64: {len(files)} wheels downloaded and hash-checked "
                  f"({len(native)} with native code: {', '.join(native)})")

    # One download of every wheel at a time; a package pip finds no wheel for is set aside for
    # its source distribution and the rest are tried again (one pip call per miss, not per package).
    from_source: list[str] = []
    remaining = dict(blocks)
    with tempfile.TemporaryDirectory() as tmp:
        while remaining:
            wheels = pip_download("".join(remaining.values()), Path(tmp),
                                  ["--only-binary=:all:", *platform_args(ARMV7_TAGS), *TARGET])
            if wheels.returncode == 0:
                break
            missing = re.search(r"No matching distribution found for ([A-Za-z0-9_.-]+)==",
                                wheels.stderr)
            if missing is None or canonical(missing[1]) not in remaining:
                failures.append(f"armv7l wheels: {wheels.stderr.strip()}")
                break
            name = canonical(missing[1])
            sdist = pip_download(remaining.pop(name), Path(tmp), ["--no-binary=:all:"])
            if sdist.returncode != 0:
                failures.append(f"armv7l: {name} has neither a wheel nor a locked sdist: "
                                f"{sdist.stderr.strip()}")
            from_source.append(name)
    print(f"3. armv7l: {len(blocks) - len(from_source)} of {len(blocks)} packages as wheels; "
          f"built from their locked source on the Pi: {', '.join(from_source) or 'none'}")

    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
