#!/usr/bin/env bash
# Builds the project's Mosquitto plugin (deploy/broker/fleet_plugin.c: names the login behind a
# refused device client id, holds each device to a message rate) into
# /usr/local/lib/fleet-telemetry/, where `fleet services up` looks for it
# (services.mosquitto_fleet_plugin).
#
# Idempotent: nothing happens when the installed build is of the current source (its sha256
# is kept beside it).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
src="$repo/deploy/broker/fleet_plugin.c"
dest_dir=/usr/local/lib/fleet-telemetry
dest="$dest_dir/mosquitto_fleet.so"
want=$(sha256sum "$src" | cut -d' ' -f1)
if [ -f "$dest" ] && [ "$(cat "$dest.sha256" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "broker-plugin: building $dest"
mkdir -p "$dest_dir"
tmp=$(mktemp)
gcc -shared -fPIC -O2 -std=c99 -Wall -Wextra -Werror -o "$tmp" "$src"
install -m 0755 "$tmp" "$dest"
rm -f "$tmp"
echo "$want" >"$dest.sha256"
