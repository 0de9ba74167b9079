"""Run the Mailchimp list-members emulator until interrupted.

    python -m esm_dagster.sandbox.mailchimp --port 12131 --members 500 --dc us6 --api-key <32 hex>-us6

Keys can also come from the environment (`ESM_MAILCHIMP_EMULATOR_API_KEYS`, comma separated), which
keeps them out of the process list. The first line on stdout is the URL, the second the list id;
nothing prints a key.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.mailchimp.emulator import DEFAULT_LIST_ID, MailchimpEmulator

KEYS_ENV = "ESM_MAILCHIMP_EMULATOR_API_KEYS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.mailchimp", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12131)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--archived", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dc", default="us6", help="the data centre the keys must name (default us6)")
    parser.add_argument("--list-id", default=DEFAULT_LIST_ID)
    parser.add_argument("--api-key", action="append", default=[], help=f"an accepted key; or set {KEYS_ENV}")
    args = parser.parse_args(argv)
    keys = list(args.api_key) + [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",") if k.strip()]
    if not keys:
        print(f"error: give at least one --api-key or set {KEYS_ENV}", file=sys.stderr)
        return 2
    emulator = MailchimpEmulator(
        keys,
        dc=args.dc,
        list_id=args.list_id,
        members=args.members,
        archived=args.archived,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )

    def on_started() -> None:
        print(emulator.list_id, flush=True)

    serve_until_signalled(emulator, on_started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
