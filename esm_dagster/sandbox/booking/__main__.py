"""Run the booking-platform emulator until interrupted.

    python -m esm_dagster.sandbox.booking --port 12112 --members 120 --bookings 400 --seed 7

Keys come from the environment (`ESM_BOOKING_EMULATOR_API_KEYS`, comma separated) or `--api-key`;
the environment keeps them out of the process list. The first line on stdout is the URL; nothing
prints a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.booking.emulator import BookingEmulator

KEYS_ENV = "ESM_BOOKING_EMULATOR_API_KEYS"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m esm_dagster.sandbox.booking",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=12112, help="port (0 picks a free one; default 12112)")
    parser.add_argument("--members", type=int, default=120)
    parser.add_argument("--bookings", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--api-key", action="append", default=[], help=f"an accepted key (repeatable); or set {KEYS_ENV}"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    keys = list(args.api_key) + [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if not keys:
        print(f"error: give at least one --api-key or set {KEYS_ENV}", file=sys.stderr)
        return 2
    emulator = BookingEmulator(
        api_keys=keys,
        members=args.members,
        bookings=args.bookings,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
