"""Run the HubSpot contacts emulator until interrupted.

    python -m esm_dagster.sandbox.hubspot --port 12121 --contacts 500 --seed 7 --token pat-na1-...

Tokens can also come from the environment (`ESM_HUBSPOT_EMULATOR_TOKENS`, comma separated), which
keeps them out of the process list. The first line on stdout is the URL; nothing prints a token.
OAuth apps come from `ESM_HUBSPOT_EMULATOR_CLIENTS` (comma separated `client_id:client_secret`);
`--refresh-token-file` then writes a refresh token of the first one (mode 0600) for a mapping's
`credentials.refresh_token`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.hubspot.emulator import HubSpotEmulator

TOKENS_ENV = "ESM_HUBSPOT_EMULATOR_TOKENS"
CLIENTS_ENV = "ESM_HUBSPOT_EMULATOR_CLIENTS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.hubspot", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12121)
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--archived", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--token", action="append", default=[], help=f"an accepted token; or set {TOKENS_ENV}"
    )
    parser.add_argument("--refresh-token-file", type=Path, help="write an OAuth refresh token here (0600)")
    args = parser.parse_args(argv)
    tokens = list(args.token) + [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]
    pairs = [p.strip() for p in os.environ.get(CLIENTS_ENV, "").split(",") if ":" in p]
    clients = dict(p.split(":", 1) for p in pairs)
    if not tokens and not clients:
        print(f"error: give at least one --token, or set {TOKENS_ENV} or {CLIENTS_ENV}", file=sys.stderr)
        return 2
    if args.refresh_token_file and not clients:
        print(f"error: --refresh-token-file needs an OAuth client in {CLIENTS_ENV}", file=sys.stderr)
        return 2
    emulator = HubSpotEmulator(
        tokens,
        contacts=args.contacts,
        archived=args.archived,
        seed=args.seed,
        oauth_clients=clients,
        host=args.host,
        port=args.port,
    )

    def on_started() -> None:
        if args.refresh_token_file:
            token = emulator.oauth.issue_refresh_token(next(iter(clients)))
            fd = os.open(args.refresh_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")

    serve_until_signalled(emulator, on_started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
