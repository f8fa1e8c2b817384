#!/usr/bin/env bash
# Builds TimescaleDB for PostgreSQL 15, because Debian 12 ships no TimescaleDB package
# (DESIGN.md decision 5).
#
# The build is the full release source, `tsl/` included, from a hash-checked tarball:
# FLEET_TIMESCALEDB_SOURCE (default ../shared/vendor/timescaledb-2.19.3.tar.gz beside the
# checkout), FLEET_TIMESCALEDB_SHA256 (default: the hash of that release). One such build serves
# both editions: each cluster's `timescaledb.license` (apache or timescale) picks what it offers.
# Without the tarball it falls back to Debian 13's source package, which is the Apache edition
# only (no `tsl/`), through a temporary deb-src list: the system's apt sources are never edited.
#
# Idempotent: nothing happens when the requested build is installed already.
# `--check-only` checks the source and says what a run would do, changing nothing.
set -euo pipefail

DEFAULT_SHA256=70f0807d121cd9ec3828d3e8bed7ea0cdff47f50fab090406e22f49e4ced6cef
repo=$(cd "$(dirname "$0")/../.." && pwd)
source_tgz=$(realpath -m "${FLEET_TIMESCALEDB_SOURCE:-$repo/../shared/vendor/timescaledb-2.19.3.tar.gz}")
want_sha256=${FLEET_TIMESCALEDB_SHA256:-$DEFAULT_SHA256}
check_only=0
case "${1:-}" in
  "") ;;
  --check-only) check_only=1 ;;
  *) echo "usage: $0 [--check-only]" >&2; exit 2 ;;
esac

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
pkglib=$("$PG_CONFIG" --pkglibdir)
sharedir=$("$PG_CONFIG" --sharedir)

# ---- which build is wanted, and is it there already ---------------------------------------
if [ -f "$source_tgz" ]; then
  edition=full
  got_sha256=$(sha256sum "$source_tgz" | cut -d' ' -f1)
  if [ "$got_sha256" != "$want_sha256" ]; then
    echo "timescaledb: REFUSED $source_tgz: sha256 $got_sha256, expected $want_sha256" >&2
    echo "timescaledb: (FLEET_TIMESCALEDB_SOURCE picks the tarball, FLEET_TIMESCALEDB_SHA256 its hash)" >&2
    exit 1
  fi
  # The version comes from the checked tarball itself, so another release needs only the two
  # variables above.
  version=$(tar -xzOf "$source_tgz" --wildcards '*/version.config' | sed -n 's/^version = *//p')
  [ -n "$version" ] || { echo "timescaledb: no version.config in $source_tgz" >&2; exit 1; }
  echo "timescaledb: source $source_tgz (sha256 ok, version $version, tsl/ included)"
  installed() {
    [ -f "$pkglib/timescaledb-tsl-$version.so" ] && [ -f "$pkglib/timescaledb-$version.so" ] \
      && [ -f "$sharedir/extension/timescaledb--$version.sql" ]
  }
else
  edition=apache-only
  echo "timescaledb: WARNING: no full source at $source_tgz (set FLEET_TIMESCALEDB_SOURCE);" \
       "falling back to Debian 13's source package: Apache edition only, without tsl/, so" \
       "timescaledb.license = timescale (compression, continuous aggregates, policies) is" \
       "not available" >&2
  installed() {
    compgen -G "$pkglib/timescaledb-*.so" >/dev/null \
      && [ -f "$sharedir/extension/timescaledb.control" ]
  }
fi

if installed; then
  if [ "$edition" = full ]; then
    echo "timescaledb: the full $version build is installed in $pkglib; nothing to do"
  else
    echo "timescaledb: a build is installed in $pkglib; nothing to do"
  fi
  exit 0
fi
if [ "$check_only" = 1 ]; then
  echo "timescaledb: would build and install the $edition build into $pkglib"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "timescaledb: the $edition build is not installed; run 'sudo $0' to build and install it" >&2
  exit 1
fi

# ---- fetch the source ---------------------------------------------------------------------
work=$(mktemp -d /tmp/fleet-timescaledb.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/tsdb"
if [ "$edition" = full ]; then
  tar -xzf "$source_tgz" -C "$work/src/tsdb" --strip-components=1
  flags=()
else
  mkdir -p "$work/lists/partial"
  echo "deb-src http://deb.debian.org/debian trixie main" >"$work/sources.list"
  apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$work/lists")
  echo "timescaledb: fetching the trixie source package"
  apt-get "${apt_opts[@]}" update -qq
  (cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only timescaledb)
  rmdir "$work/src/tsdb"
  (cd "$work/src" && dpkg-source -x --no-check ./*.dsc tsdb >/dev/null)
  flags=(-DAPACHE_ONLY=1)
fi

# ---- build --------------------------------------------------------------------------------
echo "timescaledb: building the $edition build (about 35 s on two cores)"
cd "$work/src/tsdb"
./bootstrap "${flags[@]}" -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
  -DGENERATE_DOWNGRADE_SCRIPT=OFF -DPG_CONFIG="$PG_CONFIG" >"$work/bootstrap.log" 2>&1 \
  || { tail -30 "$work/bootstrap.log" >&2; exit 1; }
make -C build -j"$(nproc)" >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }

# ---- install ------------------------------------------------------------------------------
# Staged, then each file renamed into place: running clusters have the old libraries mapped,
# and overwriting a mapped file in place can crash them, while a rename leaves them the old
# inode. New sessions load the new build, so a cluster that names no timescaledb.license gets
# the new build's default (timescale for the full build): `fleet services up` always names it.
make -C build install DESTDIR="$work/stage" >"$work/install.log" 2>&1 \
  || { tail -40 "$work/install.log" >&2; exit 1; }
(cd "$work/stage" && find . -type f -printf '%P\n') | while read -r rel; do
  dest="/$rel"
  mkdir -p "$(dirname "$dest")"
  cp "$work/stage/$rel" "$dest.fleet-new"
  chmod --reference="$work/stage/$rel" "$dest.fleet-new"
  mv -f "$dest.fleet-new" "$dest"
done
echo "timescaledb: installed the $edition build into $pkglib"
