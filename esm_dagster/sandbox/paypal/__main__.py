"""Run the PayPal emulator until interrupted.

    ESM_PAYPAL_EMULATOR_CLIENTS=client_id:secret python -m esm_dagster.sandbox.paypal --port 12151

Clients come from the environment (comma separated `id:secret` pairs), which keeps secrets out of
the process list. The first line on stdout is the URL; nothing prints a secret.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.paypal.data import DEFAULT_END, DEFAULT_START
from esm_dagster.sandbox.paypal.emulator import PayPalEmulator

CLIENTS_ENV = "ESM_PAYPAL_EMULATOR_CLIENTS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.paypal", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12151)
    parser.add_argument("--transactions", type=int, default=500)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--start", type=int, default=DEFAULT_START)
    parser.add_argument("--end", type=int, default=DEFAULT_END)
    args = parser.parse_args(argv)
    pairs = [p.strip() for p in os.environ.get(CLIENTS_ENV, "").split(",") if ":" in p]
    if not pairs:
        print(f"error: set {CLIENTS_ENV}=client_id:secret[,...]", file=sys.stderr)
        return 2
    clients = dict(p.split(":", 1) for p in pairs)
    emulator = PayPalEmulator(
        clients=clients,
        transactions=args.transactions,
        seed=args.seed,
        start=args.start,
        end=args.end,
        host=args.host,
        port=args.port,
    )
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
