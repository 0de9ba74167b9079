"""Run the Telegram emulator until interrupted.

    ESM_TELEGRAM_EMULATOR_TOKENS=<bot id>:<secret> python -m esm_dagster.sandbox.telegram \\
        --port 12141 --updates 60

Accepted bot tokens come from the environment only (comma separated), which keeps them out of the
process list. The first line on stdout is the URL; nothing prints a token, and the request log
masks it in paths.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.telegram.emulator import TelegramEmulator

AUTH_ENV = "ESM_TELEGRAM_EMULATOR_TOKENS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.telegram", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12141)
    parser.add_argument("--updates", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    tokens = [t.strip() for t in os.environ.get(AUTH_ENV, "").split(",") if t.strip()]
    if not tokens:
        print(f"error: set {AUTH_ENV}", file=sys.stderr)
        return 2
    try:
        emulator = TelegramEmulator(
            tokens=tokens,
            updates=args.updates,
            seed=args.seed,
            host=args.host,
            port=args.port,
        )
    except ValueError as exc:  # one line naming the variable, never the token itself
        print(f"error: {AUTH_ENV}: {exc}", file=sys.stderr)
        return 2
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
