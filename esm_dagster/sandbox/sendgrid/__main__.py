"""Run the SendGrid emulator until interrupted.

    python -m esm_dagster.sandbox.sendgrid --port 12113 --contacts 200 --seed 5 --api-key SG.test...

Keys can also come from the environment (`ESM_SENDGRID_EMULATOR_API_KEYS`, comma separated), which
keeps them out of the process list. The first line on stdout is the URL; nothing prints a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.sendgrid.emulator import SendGridEmulator

KEYS_ENV = "ESM_SENDGRID_EMULATOR_API_KEYS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.sendgrid", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12113)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--suppressions", type=int, default=100, help="entries per suppression list")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--api-key", action="append", default=[], help=f"an accepted key; or set {KEYS_ENV}")
    args = parser.parse_args(argv)
    keys = list(args.api_key) + [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if not keys:
        print(f"error: give at least one --api-key or set {KEYS_ENV}", file=sys.stderr)
        return 2
    emulator = SendGridEmulator(
        api_keys=keys,
        contacts=args.contacts,
        suppressions=args.suppressions,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
