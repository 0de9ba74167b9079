"""The leak scan (issue 6): syncs that succeed and fail in every way, then a search for every secret.

For each provider with an emulator (`leak_cases.CASES`) one mapping is synced through real Dagster
(the asset's job `execute_in_process` on a `DagsterInstance` whose storage is SQLite on disk, then
the run-failure sensor, which alerts through a webhook channel pointed at a closed port and a
Slack-style channel that accepts) and through `esm sync`, once per failure class: success, a revoked key (401), 403, 429 with a Retry-After beyond the
policy's max_delay, a burst of 503s, answers slower than `timeout_seconds`, dropped connections,
a 200 whose body is not JSON, a redirect, an error body that echoes the credential back, and a
credential no configured key can decrypt. A key pasted into the rules is refused when the mapping
is written. Each failure is also provoked once on a client built from the row (`probe()`), so the
`ProviderError` objects themselves, their reprs and their chained tracebacks are scanned too.

Then every secret (clear, URL-encoded and base64 forms, and the base64 of `user:password` for
HTTP Basic) is searched for in: Python logs captured at DEBUG (httpx and httpcore included),
stdout and stderr, every event of the Dagster event log read back from the instance (serialised
whole: messages, metadata, failure descriptions, stack traces) and every file of the instance's
directory, every row of every catalog table (and the SQLite file's bytes), the emulators' request
logs, and the reprs of providers and errors. Zero hits.

The hostile server answering the invalid-JSON, redirect and echo cases reflects the credential it
was sent into its answer (Location header, error body), as a misbehaving or malicious endpoint
would: the client must not carry that text anywhere.
"""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from esm_dagster_tests.security.leak_cases import CASES
from esm_dagster_tests.security.leak_scan import Scan, scan_provider, shard


@pytest.mark.slow  # 40-80 s per provider on a loaded 2-core machine
@pytest.mark.parametrize("provider", shard(0))
def test_no_secret_leaks_across_success_and_every_failure_class(
    provider: str,
    tmp_path: Path,
    fernet_key: str,
    alerts_file: list[str],
    debug_logs: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scan_provider(provider, tmp_path, fernet_key, alerts_file, debug_logs, capfd, monkeypatch)


def test_every_provider_is_in_one_shard() -> None:
    from esm_dagster_tests.security.leak_scan import SHARDS

    assert sorted(p for i in range(SHARDS) for p in shard(i)) == sorted(CASES)


def test_the_scan_finds_a_secret_in_each_encoding() -> None:
    """The scan cannot pass by looking for the wrong thing: each form it searches for is found."""
    case = CASES["twilio"]
    user, password = case.basic_pairs[0]
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    for text in (
        f"Authorization: Basic {basic}",
        f"token={quote_plus(password + ' x')}",
        f"blob {base64.b64encode(password.encode()).decode()}",
        f"raw {password}",
    ):
        scan = Scan()
        scan.add("text", text)
        assert scan.hits(case.secrets()), text
