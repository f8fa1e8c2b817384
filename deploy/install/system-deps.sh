#!/usr/bin/env bash
# Installs the Debian 12 packages the project's local stack needs, only when missing.
# Idempotent: a machine that already has everything makes no apt call at all.
set -euo pipefail

PACKAGES=(
  postgresql-15 postgresql-15-postgis-3 postgresql-server-dev-15 postgresql-client-15
  cmake build-essential mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev redis-server
  dpkg-dev libssl-dev libkrb5-dev
  chromium wrk
)
# Node.js runs Azurite (the Azure Storage emulator) and installs Leaflet; keep an existing
# installation (it may be newer than Debian's) and add Debian's only when there is none.
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
# Debian's own python3 makes virtualenvs only with python3-venv (a python3 of another origin,
# such as pyenv's, brings venv itself).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || PACKAGES+=(python3-venv)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing packages: ${missing[*]}" >&2
    echo "system-deps: run 'sudo $0' (or make setup as root) to install them" >&2
    exit 1
  fi
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packaged services must not start their own instances on the standard ports:
  # the project runs its own (DESIGN.md decision 6). policy-rc.d keeps invoke-rc.d quiet.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  [ "$created_policy" = 1 ] && rm -f "$policy"
fi

"$(dirname "$0")/timescaledb.sh"
"$(dirname "$0")/broker-plugin.sh"
