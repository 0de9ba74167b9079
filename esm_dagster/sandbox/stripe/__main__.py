"""Run the Stripe emulator until interrupted.

    python -m esm_dagster.sandbox.stripe --port 12111 --customers 200 --charges 1000 --seed 7 \\
        --api-key sk_test_...

Keys can also come from the environment (`ESM_STRIPE_EMULATOR_API_KEYS`, comma separated), which keeps
them out of the process list. The first line on stdout is the URL; nothing prints a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.stripe.data import DEFAULT_API_VERSION, DEFAULT_END, DEFAULT_START
from esm_dagster.sandbox.stripe.emulator import StripeEmulator

KEYS_ENV = "ESM_STRIPE_EMULATOR_API_KEYS"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m esm_dagster.sandbox.stripe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=12111, help="port (0 picks a free one; default 12111)")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--charges", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", type=int, default=DEFAULT_START, help="first seeded created (unix s)")
    parser.add_argument("--end", type=int, default=DEFAULT_END, help="end of seeded created (unix s)")
    parser.add_argument("--api-version", default=DEFAULT_API_VERSION)
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help=f"an accepted secret key (repeatable); or set {KEYS_ENV}",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keys = list(args.api_key) + [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if not keys:
        print(f"error: give at least one --api-key or set {KEYS_ENV}", file=sys.stderr)
        return 2
    emulator = StripeEmulator(
        api_keys=keys,
        customers=args.customers,
        charges=args.charges,
        seed=args.seed,
        start=args.start,
        end=args.end,
        api_version=args.api_version,
        host=args.host,
        port=args.port,
    )
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
