"""Run the Salesforce emulator until interrupted.

    ESM_SALESFORCE_EMULATOR_CLIENTS=consumer_key:secret python -m esm_dagster.sandbox.salesforce \\
        --port 12161 --jwt-public-key connected_app.pub.pem

Clients come from the environment (comma separated `key:secret` pairs), which keeps secrets out of
the process list. The first line on stdout is the URL; nothing prints a secret. `--refresh-token-file`
writes a refresh token for the first client (mode 0600), for a mapping's `credentials.refresh_token`;
it rotates on first use.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.salesforce.data import DEFAULT_END, DEFAULT_START
from esm_dagster.sandbox.salesforce.emulator import SalesforceEmulator

CLIENTS_ENV = "ESM_SALESFORCE_EMULATOR_CLIENTS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.salesforce", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12161)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--start", type=int, default=DEFAULT_START)
    parser.add_argument("--end", type=int, default=DEFAULT_END)
    parser.add_argument("--jwt-public-key", type=Path, help="PEM file: enables the JWT bearer grant")
    parser.add_argument("--refresh-token-file", type=Path, help="write a refresh token here (mode 0600)")
    parser.add_argument("--audience", default="https://login.salesforce.com", help="the JWT aud to accept")
    args = parser.parse_args(argv)
    pairs = [p.strip() for p in os.environ.get(CLIENTS_ENV, "").split(",") if ":" in p]
    if not pairs:
        print(f"error: set {CLIENTS_ENV}=consumer_key:secret[,...]", file=sys.stderr)
        return 2
    clients = dict(p.split(":", 1) for p in pairs)
    emulator = SalesforceEmulator(
        clients=clients,
        contacts=args.contacts,
        seed=args.seed,
        start=args.start,
        end=args.end,
        jwt_public_key=args.jwt_public_key.read_text() if args.jwt_public_key else None,
        login_audience=args.audience,
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
