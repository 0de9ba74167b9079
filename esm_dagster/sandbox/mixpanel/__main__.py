"""Run the Mixpanel emulator (import and export on one port) until interrupted.

    python -m esm_dagster.sandbox.mixpanel --port 12114 --project-id 1 --events 500 --seed 11

The service account comes from the environment, `ESM_MIXPANEL_EMULATOR_ACCOUNT=user:secret`, so the
secret stays out of the process list. The first line on stdout is the URL; nothing prints a secret.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from esm_dagster.sandbox._http import serve_until_signalled
from esm_dagster.sandbox.mixpanel.emulator import MixpanelEmulator

ACCOUNT_ENV = "ESM_MIXPANEL_EMULATOR_ACCOUNT"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.sandbox.mixpanel", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12114)
    parser.add_argument("--project-id", type=int, default=1)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--timezone", default="UTC", help="the project's timezone for export dates")
    args = parser.parse_args(argv)
    user, _, secret = os.environ.get(ACCOUNT_ENV, "").partition(":")
    if not user or not secret:
        print(f"error: set {ACCOUNT_ENV}=<service account user>:<secret>", file=sys.stderr)
        return 2
    emulator = MixpanelEmulator(
        service_accounts={user: secret},
        project_id=args.project_id,
        events=args.events,
        seed=args.seed,
        timezone=args.timezone,
        host=args.host,
        port=args.port,
    )
    serve_until_signalled(emulator)
    return 0


if __name__ == "__main__":
    sys.exit(main())
