"""`fleet broker prune`: make a dynamic-security broker's device logins match the database.

A device login belongs on the broker while its `devices` row is not revoked. Logins left
over (a device revoked while the broker was unreachable, rows revoked by migration 0019, a
database restored to an earlier day) are deleted, which also ends their sessions. Devices
whose login the broker lacks are listed: their password exists only in the gateway's config,
so they need `POST /api/devices` again (after `DELETE`).
"""

from __future__ import annotations

import argparse
import sys


def register(parser: argparse.ArgumentParser) -> None:
    """`fleet broker prune [--dry-run]`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("prune", help="delete device logins the database does not hold")
    p.add_argument("--dry-run", action="store_true", help="only say what would change")
    p.add_argument("--tenant", metavar="SLUG",
                   help="only this tenant's logins (\"{SLUG}/...\")")
    p.set_defaults(func=_prune)


def _prune(args: argparse.Namespace) -> int:
    import psycopg

    from api.broker_logins import BrokerAdmin, BrokerLoginError, stray_logins
    from api.config import ApiSettings
    from core.errors import SettingsError
    from core.settings import load_settings

    settings = load_settings(ApiSettings, args.config)
    if not settings.api.mqtt_admin_url:
        raise SettingsError("api.mqtt_admin_url is not set: fleet broker works with a broker "
                          "that keeps logins in its dynamic-security plugin")
    db_url = settings.database.admin_url or settings.database.owner_url
    if not db_url:
        raise SettingsError("fleet broker prune reads `devices` as database.admin_url or "
                          "owner_url; neither is set")
    with psycopg.connect(db_url) as conn:
        active = {r[0] for r in conn.execute(
            "SELECT mqtt_username FROM devices WHERE status <> 'revoked'")}
    admin = BrokerAdmin(settings.api.mqtt_admin_url)
    try:
        stray, missing = stray_logins(admin, active)
        if args.tenant:
            mine = f"{args.tenant}/"
            stray = [login for login in stray if login.startswith(mine)]
            missing = [login for login in missing if login.startswith(mine)]
            active = {login for login in active if login.startswith(mine)}
        for login in stray:
            print(f"{'would delete' if args.dry_run else 'deleting'} {login}")
            if not args.dry_run:
                admin.remove_device(login)
    except BrokerLoginError as exc:
        raise BrokerLoginError(f"broker: {exc}") from exc
    for login in missing:
        print(f"missing on the broker: {login} (provision this device again)", file=sys.stderr)
    print(f"{len(active)} device logins in the database, {len(stray)} stray on the broker "
          f"{'found' if args.dry_run else 'deleted'}, {len(missing)} missing on the broker")
    return 0
