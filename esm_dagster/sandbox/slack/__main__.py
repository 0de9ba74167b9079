"""Run the Slack emulator until interrupted.

    ESM_SLACK_EMULATOR_TOKENS=xoxb-... python -m esm_dagster.sandbox.slack --port 12171 --users 40

Accepted bot tokens come from the environment only (comma separated), which keeps them out of the
process list. The first line on stdout is the URL; nothing prints a token.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.slack.emulator import SlackEmulator

AUTH_ENV = "ESM_SLACK_EMULATOR_TOKENS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.slack", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12171)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--channels", type=int, default=9)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    tokens = [t.strip() for t in os.environ.get(AUTH_ENV, "").split(",") if t.strip()]
    if not tokens:
        print(f"error: set {AUTH_ENV}", file=sys.stderr)
        return 2
    emulator = SlackEmulator(
        tokens=tokens,
        users=args.users,
        channels=args.channels,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
