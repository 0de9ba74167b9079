"""`make bench`: inbound records/s (emulator -> rules -> database) and peak memory by sync size.

Each size runs in a fresh child process (so its peak RSS is the sync's own) against a Stripe
emulator in another process, over loopback HTTP, into a fresh catalog. The figures to compare are
ratios measured in one run: records/s across sizes, and peak memory growth from 10k to 100k.

    python -m benchmarks.inbound [--sizes 10000,100000] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEY = "sk_test_benchbenchbench0123456789"
RESULTS = Path(__file__).with_name("results")


def _status_mb(field: str) -> float | None:
    """A `VmHWM`/`VmRSS` line of /proc/self/status in MB (Linux), else None.

    Not `ru_maxrss`: Linux keeps that across `execve`, so a child started by a big parent
    would report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _peak_rss_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(url: str, database_url: str) -> None:
    """Register the demo's charges mapping, sync it once, print the figures as JSON."""
    from esm_dagster.catalog.db import session_factory
    from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
    from esm_dagster.catalog.migrate import upgrade
    from esm_dagster.demo.run import demo_mappings
    from esm_dagster.security.vault import Vault, generate_key
    from esm_dagster.sync.engine import run_mapping

    os.environ["ESM_FERNET_KEYS"] = generate_key()
    os.environ["ESM_ALLOW_LOOPBACK"] = "1"  # sandbox mode: the emulator is on loopback
    upgrade(database_url)
    charges = next(
        m for m in demo_mappings(url) if m["mapping_rules"]["sync_config"].get("stream") == "charges"
    )
    charges["credentials"] = {"api_key": KEY}
    # The figure is the engine's throughput: the demo's API budget (600/min) would measure the
    # rate limit instead (1,000 pages of 100 take 95 s at 10 requests/s).
    charges["mapping_rules"]["sync_config"].pop("rate_limiting", None)
    charges.pop("created_by", None)
    with session_factory(database_url).begin() as session:
        upsert_mapping(session, Vault.from_env(), MappingInput.model_validate(charges))
    rss_before = _status_mb("VmRSS") or _peak_rss_mb()
    started = time.perf_counter()
    report = run_mapping(database_url, "stripe/charges")
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "read": report.records_read,
                "written": report.records_written,
                "rejected": report.records_rejected,
                "pages": report.pages,
                "seconds": round(seconds, 3),
                "records_per_second": round(report.records_read / seconds),
                "rss_before_sync_mb": rss_before,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )
    )


def start_emulator(charges: int) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "ESM_STRIPE_EMULATOR_API_KEYS": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "esm_dagster.sandbox.stripe", "--port", "0", "--customers", "1000",
         "--charges", str(charges), "--seed", "11"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    url = proc.stdout.readline().strip().split()[-1]
    if not url.startswith("http://127.0.0.1"):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {url!r}")
    return proc, url


def measure(size: int, database_url: str | None, url: str | None = None) -> dict[str, object]:
    """One esm_dagster sync of `size` charges; against `url` if given, else a fresh emulator."""
    proc = None
    if url is None:
        proc, url = start_emulator(size)
    schema = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            db = database_url or f"sqlite:///{tmp}/bench.db"
            if database_url and database_url.startswith("postgres"):
                schema = f"esm_bench_{size}_{os.getpid()}"
                db = _fresh_pg_schema(database_url, schema)
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.inbound", "--child", url, "--database-url", db],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        if database_url and schema:
            _drop_pg_schema(database_url, schema)
    return {"charges": size, "engine": (database_url or "sqlite").split(":")[0], **figures}


def _drop_pg_schema(base: str, schema: str) -> None:
    """The benchmark's schema goes once measured: it must not pile up in a shared database."""
    import sqlalchemy as sa

    from esm_dagster.catalog.db import normalize_url

    engine = sa.create_engine(normalize_url(base))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def _fresh_pg_schema(base: str, schema: str) -> str:
    import sqlalchemy as sa

    from esm_dagster.catalog.db import normalize_url

    engine = sa.create_engine(normalize_url(base))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    url = sa.engine.make_url(normalize_url(base)).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--database-url", default=os.environ.get("ESM_BENCH_DATABASE_URL"))
    parser.add_argument("--child", metavar="EMULATOR_URL")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.database_url)
        return 0
    rows = [measure(int(size), args.database_url) for size in args.sizes.split(",")]
    columns = ["engine", "charges", "read", "written", "seconds", "records_per_second", "rss_before_sync_mb",
               "peak_rss_mb"]  # fmt: skip
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if len(rows) >= 2:
        last, first = rows[-1], rows[0]
        growth = (float(str(last["peak_rss_mb"])) - float(str(last["rss_before_sync_mb"]))) / max(
            1.0, float(str(first["peak_rss_mb"])) - float(str(first["rss_before_sync_mb"]))
        )
        print(f"\nsync memory growth {rows[-1]['charges']} vs {rows[0]['charges']}: {growth:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inbound.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
