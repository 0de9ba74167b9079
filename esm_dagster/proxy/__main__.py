"""`python -m esm_dagster.proxy serve|hash-password`: the UI proxy without touching the `esm` CLI.

python -m esm_dagster.proxy hash-password ana@club.example >> /etc/esm/ui-passwords
python -m esm_dagster.proxy serve --upstream http://127.0.0.1:3000 --password-file /etc/esm/ui-passwords
"""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import sys
from pathlib import Path
from urllib.parse import urlsplit

from esm_dagster.security.secret import Secret


def is_loopback_http(url: str) -> bool:
    """The webserver is reached in clear, so only over loopback, named by address (a hostname could
    resolve elsewhere)."""
    parts = urlsplit(url)
    try:
        return parts.scheme == "http" and ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esm_dagster.proxy", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the authenticating proxy")
    serve_cmd.add_argument(
        "--upstream", default="http://127.0.0.1:3000", help="the loopback Dagster webserver"
    )
    serve_cmd.add_argument("--password-file", type=Path, required=True, help="email:scrypt$... lines")
    serve_cmd.add_argument("--database-url", default=None, help="the catalog (default: ESM_DATABASE_URL)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8080)
    hash_cmd = commands.add_parser("hash-password", help="print a password-file line (password from stdin)")
    hash_cmd.add_argument("email")
    args = parser.parse_args(argv)

    if args.command == "hash-password":
        from esm_dagster.proxy.passwords import hash_password

        email = args.email.strip().lower()
        if "@" not in email or ":" in email:
            parser.error(f"{args.email!r} is not an email address")
        if sys.stdin.isatty():
            password = getpass.getpass(f"password for {email}: ")
        else:
            password = sys.stdin.readline().rstrip("\n")
        if len(password) < 12:
            parser.error("use a password of at least 12 characters")
        print(f"{email}:{hash_password(Secret(password))}")
        return 0

    from esm_dagster.catalog.db import database_url
    from esm_dagster.proxy.app import ProxyConfig
    from esm_dagster.proxy.serve import serve

    url = args.database_url or database_url()
    upstream = args.upstream.rstrip("/")
    if not is_loopback_http(upstream):
        parser.error(
            f"--upstream {upstream!r}: the Dagster webserver must be on loopback (http://127.0.0.1:PORT)"
        )
    serve(
        ProxyConfig(upstream=upstream, password_file=args.password_file, database_url=url),
        host=args.host,
        port=args.port,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
