"""Run the Twilio emulator until interrupted.

    ESM_TWILIO_EMULATOR_AUTH_TOKEN=... python -m esm_dagster.sandbox.twilio --port 12181 \\
        --account-sid AC0123456789abcdef0123456789abcdef --messages 200 --seed 7

The auth token comes from the environment only, which keeps it out of the process list. The first
line on stdout is the URL; nothing prints the token.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.twilio.emulator import TwilioEmulator

AUTH_ENV = "ESM_TWILIO_EMULATOR_AUTH_TOKEN"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.twilio", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12181)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    token = os.environ.get(AUTH_ENV, "")
    if not token:
        print(f"error: set {AUTH_ENV}", file=sys.stderr)
        return 2
    emulator = TwilioEmulator(
        account_sid=args.account_sid,
        auth_token=token,
        messages=args.messages,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
