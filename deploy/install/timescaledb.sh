#!/usr/bin/env bash
# Builds TimescaleDB (Apache-2 edition) for PostgreSQL 15 from Debian 13's source package,
# because Debian 12 ships no TimescaleDB package (DESIGN.md decision 5). The system's apt
# sources are never edited: a temporary deb-src list and state directory are passed to apt.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
pkglib=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)
if compgen -G "$pkglib/timescaledb-*.so" >/dev/null && [ -f "$sharedir/extension/timescaledb.control" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "timescaledb: not installed; run 'sudo $0' to build and install it" >&2
  exit 1
fi

work=$(mktemp -d /tmp/fleet-timescaledb.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/src"
echo "deb-src http://deb.debian.org/debian trixie main" >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$work/lists")
echo "timescaledb: fetching the trixie source package"
apt-get "${apt_opts[@]}" update -qq
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only timescaledb)
(cd "$work/src" && dpkg-source -x --no-check ./*.dsc tsdb >/dev/null)
echo "timescaledb: building (about a minute on two cores)"
cd "$work/src/tsdb"
./bootstrap -DAPACHE_ONLY=1 -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
  -DGENERATE_DOWNGRADE_SCRIPT=OFF -DPG_CONFIG="$PG_CONFIG" >"$work/bootstrap.log" 2>&1 \
  || { tail -30 "$work/bootstrap.log" >&2; exit 1; }
make -C build -j"$(nproc)" install >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
echo "timescaledb: installed into $pkglib"
