"""`esm webhooks serve` as a user runs it: its own process, uvicorn on a loopback port, the catalog
from `ESM_DATABASE_URL`; a signed Stripe event is accepted and its output names no secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from esm_dagster.catalog.migrate import upgrade
from esm_dagster.sandbox.webhook_signers import stripe_signature_header
from esm_dagster_tests.webhooks.deliveries import add_mapping

SECRET = "whsec_test_cliServeSecret00000001"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_command_receives_a_signed_event(tmp_path: Path, fernet_key: str) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    upgrade(url)
    mapping_id = add_mapping(url, "stripe", {"api_key": "sk_test_cliserve000001", "webhook_secret": SECRET})
    port = free_port()
    env = {
        **os.environ,
        "ESM_DATABASE_URL": url,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    command = [sys.executable, "-m", "esm_dagster.cli", "webhooks", "serve", "--port", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "esm webhooks serve did not start"
            time.sleep(0.1)
        body = b'{"id": "evt_cli_1", "object": "event", "type": "customer.created", "data": {"object": {}}}'
        headers = {"Stripe-Signature": stripe_signature_header(body, SECRET, int(time.time()))}
        accepted = httpx.post(f"{base}/webhooks/{mapping_id}", headers=headers, content=body)
        assert accepted.status_code == 200 and accepted.json()["stored"] == 1, accepted.text
        forged = httpx.post(
            f"{base}/webhooks/{mapping_id}", headers={"Stripe-Signature": "t=1,v1=00"}, content=body
        )
        assert forged.status_code == 401
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=15)
    assert f"http://127.0.0.1:{port}" in output  # uvicorn's startup line: loopback by default
    assert "1 event(s) stored" in output and "does not match" in output
    assert SECRET not in output and fernet_key not in output
