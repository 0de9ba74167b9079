"""`make bench`: every figure of issue 8 measured in one run, written as markdown and JSON.

(a) inbound sync of N Stripe charges from the emulator into PostgreSQL: esm_dagster against a dlt
    pipeline (`rest_api` source, `postgres` destination), both reading the same emulator process;
(b) the raw limit on the same pages: a bare httpx pager plus one `COPY`;
(c) the rules engine alone on 1M records against a per-record loop;
(d) esm_dagster's peak memory at 10k, 100k and 1M records;
(e) definitions load time and sensor tick time at 100, 1,000 and 5,000 mappings.

The machine is shared, so absolute times are noise; the ratios, measured minutes apart on the
same machine, are the figures. Each is reported with the goal the issue sets for it.

    python -m benchmarks.report [--inbound 100000] [--memory 10000,100000,1000000]
        [--rules 1000000] [--mappings 100,1000,5000] [--dlt-python PATH] [--database-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from benchmarks import definitions_bench, inbound, raw_limit, rules_bench

RESULTS = Path(__file__).with_name("results")
DLT_SCRIPT = Path(__file__).with_name("dlt_pipeline.py")
DEFAULT_DB = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _admin(database_url: str) -> Any:
    import sqlalchemy as sa

    from esm_dagster.catalog.db import normalize_url

    return sa.create_engine(normalize_url(database_url))


def _drop_schemas(database_url: str, *schemas: str) -> None:
    import sqlalchemy as sa

    engine = _admin(database_url)
    with engine.begin() as conn:
        for schema in schemas:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def _dsn(database_url: str) -> str:
    return database_url.replace("postgresql+psycopg2://", "postgresql://", 1)


def run_dlt(python: str, url: str, database_url: str) -> dict[str, Any]:
    dataset = f"dlt_bench_{uuid.uuid4().hex[:8]}"
    try:
        out = subprocess.run(
            [python, str(DLT_SCRIPT), url, inbound.KEY, _dsn(database_url), dataset],
            capture_output=True, text=True, check=False, env={**os.environ, "RUNTIME__LOG_LEVEL": "ERROR"},
        )  # fmt: skip
        if out.returncode != 0:
            return {"error": out.stderr.strip().splitlines()[-1][:300] if out.stderr.strip() else "failed"}
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result
    finally:
        _drop_schemas(database_url, dataset, f"{dataset}_staging")


def run_raw(url: str, database_url: str) -> dict[str, Any]:
    import sqlalchemy as sa

    schema = f"raw_bench_{uuid.uuid4().hex[:8]}"
    engine = _admin(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    try:
        return raw_limit.measure(url, inbound.KEY, _dsn(database_url), schema)
    finally:
        _drop_schemas(database_url, schema)


def inbound_comparison(size: int, database_url: str, dlt_python: str | None) -> dict[str, Any]:
    proc, url = inbound.start_emulator(size)
    try:
        esm = inbound.measure(size, database_url, url=url)
        peer = run_dlt(dlt_python, url, database_url) if dlt_python else {"error": "dlt not installed"}
        raw = run_raw(url, database_url)
    finally:
        proc.terminate()
        proc.wait(10)
    figures: dict[str, Any] = {"charges": size, "esm_dagster": esm, "dlt": peer, "raw": raw}
    esm_rps = float(str(esm["records_per_second"]))
    if "records_per_second" in peer:
        figures["esm_vs_dlt"] = round(esm_rps / float(peer["records_per_second"]), 2)
    figures["raw_vs_esm"] = round(raw["records_per_second"] / esm_rps, 2)
    return figures


def memory_by_size(
    sizes: list[int], database_url: str, known: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    rows = [known.get(size) or inbound.measure(size, database_url) for size in sizes]
    return [
        {k: row[k] for k in ("charges", "read", "written", "seconds", "records_per_second",
                             "rss_before_sync_mb", "peak_rss_mb")}
        for row in rows
    ]  # fmt: skip


def _find_dlt_python(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else [sys.executable]
    for python in candidates:
        try:
            if python and subprocess.run([python, "-c", "import dlt"], capture_output=True).returncode == 0:
                return python
        except OSError:  # no such interpreter: dlt is not installed there either
            continue
    return None


def _count(least: int) -> Any:
    """An argparse type: an integer of at least `least` (argparse prints the error, no traceback)."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is below {least}")
        return value

    return parse


def _sizes(text: str) -> list[int]:
    """Comma-separated sizes, each at least 1; empty means none."""
    return [_count(1)(part.strip()) for part in text.split(",") if part.strip()]


def _progress(section: str, figures: Any) -> None:
    """A finished section's figures on stderr as it completes: the full run takes about half an hour."""
    print(f"{section} done: {json.dumps(figures)}", file=sys.stderr, flush=True)


def _goal(value: float | None, goal: str, ok: bool | None) -> dict[str, Any]:
    return {"value": value, "goal": goal, "met": ok}


def goals(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    cmp = report.get("inbound")
    if cmp:
        vs_dlt = cmp.get("esm_vs_dlt")
        out["inbound esm_dagster / dlt records/s"] = _goal(
            vs_dlt, ">= 2", None if vs_dlt is None else vs_dlt >= 2
        )
        out["inbound raw limit / esm_dagster records/s"] = _goal(
            cmp["raw_vs_esm"], "<= 2", cmp["raw_vs_esm"] <= 2
        )
    rules = report.get("rules")
    if rules:
        # On the same records (the loop's share): the conservative figure. Records/s over the
        # whole 1M also credit the validators' memo caches carrying over between batches.
        speed = rules["speedup_same_records"]
        out["rules engine / per-record loop (same records)"] = _goal(speed, ">= 20", speed >= 20)
    memory = report.get("memory")
    if memory and len(memory) >= 2:
        ratio = round(memory[-1]["peak_rss_mb"] / memory[0]["peak_rss_mb"], 2)
        out[f"peak RSS {memory[-1]['charges']} / {memory[0]['charges']} records"] = _goal(
            ratio, "<= 1.5", ratio <= 1.5
        )
        growth = [m["peak_rss_mb"] - m["rss_before_sync_mb"] for m in (memory[0], memory[-1])]
        out[f"RSS growth during the sync, {memory[-1]['charges']} vs {memory[0]['charges']} (MB)"] = _goal(
            None if not growth[0] else round(growth[1] / growth[0], 2), "(context)", None
        )
    for row in report.get("definitions", []):
        if row["mappings"] == 1000:
            out["definitions load, 1,000 mappings (s)"] = _goal(
                row["load_seconds"], "< 5", row["load_seconds"] < 5
            )
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# esm_dagster bench, {report['when']}", "", f"Machine: {report['machine']}. "
             "Shared with other work: read the ratios, not the absolute times.", "", "## Goals", "",
             "| figure | measured | goal | met |", "|---|---|---|---|"]  # fmt: skip
    for name, g in report["goals"].items():
        met = "n/a" if g["met"] is None else ("yes" if g["met"] else "**no**")
        lines.append(f"| {name} | {g['value']} | {g['goal']} | {met} |")
    lines += ["", "Goals are issue 8's. Ratios of figures measured in this one run; the RSS growth row "
              "(peak minus RSS before the sync, largest size over smallest) shows what the sync itself "
              "adds beyond the interpreter, Dagster and the libraries, and has no goal."]  # fmt: skip
    cmp = report.get("inbound")
    if cmp:
        lines += ["", f"## (a, b) Inbound: {cmp['charges']:,} Stripe charges, emulator -> PostgreSQL", "",
                  "| loader | records loaded | seconds | records/s | peak RSS MB |", "|---|---|---|---|---|"]  # fmt: skip
        esm, peer, raw = cmp["esm_dagster"], cmp["dlt"], cmp["raw"]
        lines.append(f"| esm_dagster | {esm['written']} (+{esm['rejected']} quarantined) | {esm['seconds']} | "
                     f"{esm['records_per_second']} | {esm['peak_rss_mb']} |")  # fmt: skip
        if "error" in peer:
            lines.append(f"| dlt | not run: {peer['error']} | | | |")
        else:
            lines.append(f"| dlt (rest_api -> postgres, merge) | {peer['loaded']} | {peer['seconds']} | "
                         f"{peer['records_per_second']} | {peer['peak_rss_mb']} |")  # fmt: skip
        lines.append(
            f"| raw: httpx pager + COPY | {raw['loaded']} | {raw['seconds']} | {raw['records_per_second']} | |"
        )
    rules = report.get("rules")
    if rules:
        lines += ["", f"## (c) Rules engine on {rules['records']:,} records (seed rules)", "",
                  "| | records | seconds | records/s | accepted |", "|---|---|---|---|---|",
                  f"| RulesPlan.apply, batches of {rules['batch']} | {rules['records']} | {rules['engine_seconds']} | "
                  f"{rules['engine_records_per_second']} | {rules['engine_accepted']} |",
                  f"| per-record loop | {rules['loop_records']} | {rules['loop_seconds']} | "
                  f"{rules['loop_records_per_second']} | {rules['loop_accepted']} |", "",
                  f"Same verdicts on the loop's records: {rules['same_verdicts_on_loop_records']}; "
                  f"speedup on the same records {rules['speedup_same_records']}x, by records/s "
                  f"{rules['speedup_records_per_second']}x."]  # fmt: skip
    memory = report.get("memory")
    if memory:
        lines += ["", "## (d) esm_dagster peak memory by sync size (PostgreSQL target)", "",
                  "| records | seconds | records/s | RSS before sync MB | peak RSS MB |", "|---|---|---|---|---|"]  # fmt: skip
        for row in memory:
            lines.append(f"| {row['charges']} | {row['seconds']} | {row['records_per_second']} | "
                         f"{row['rss_before_sync_mb']} | {row['peak_rss_mb']} |")  # fmt: skip
    defs = report.get("definitions")
    if defs:
        lines += ["", "## (e) Definitions by catalog size", "",
                  "| mappings | assets | jobs | catalog query s | load + validate s | error-state sensor tick s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for row in defs:
            tick = row["sensor_tick_seconds"].get("esm_error_state_sensor")
            lines.append(f"| {row['mappings']} | {row['assets']} | {row['jobs']} | {row['catalog_query_seconds']} | "
                         f"{row['load_seconds']} | {tick} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inbound", type=_count(0), default=100_000, help="charges for (a)/(b); 0 skips")
    parser.add_argument(
        "--memory", type=_sizes, default="10000,100000,1000000", help="sizes for (d); empty skips"
    )
    parser.add_argument("--rules", type=_count(0), default=1_000_000, help="records for (c); 0 skips")
    parser.add_argument(
        "--loop-records",
        type=_count(1),
        default=100_000,
        help="records of (c) the loop also runs on, rounded up to whole batches of 10,000",
    )
    parser.add_argument(
        "--mappings", type=_sizes, default="100,1000,5000", help="catalog sizes for (e); empty skips"
    )
    parser.add_argument("--dlt-python", help="interpreter with dlt[postgres] (default: this one)")
    parser.add_argument("--database-url", default=os.environ.get("ESM_BENCH_DATABASE_URL", DEFAULT_DB))
    parser.add_argument("--name", default="bench")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the report files")
    parser.add_argument("--render", metavar="JSON", help="only re-write the markdown of a saved report")
    args = parser.parse_args()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"--out {args.out}: {exc.strerror}")
    if args.render:
        saved = json.loads(Path(args.render).read_text())
        saved["goals"] = goals(saved)
        Path(args.render).with_suffix(".md").write_text(markdown(saved))
        print(markdown(saved))
        return 0
    report: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    known: dict[int, dict[str, Any]] = {}
    if args.inbound:
        dlt_python = _find_dlt_python(args.dlt_python)
        report["inbound"] = inbound_comparison(args.inbound, args.database_url, dlt_python)
        known[args.inbound] = report["inbound"]["esm_dagster"]
        _progress("(a, b) inbound", report["inbound"])
    if args.rules:
        report["rules"] = rules_bench.measure(args.rules, min(args.rules, args.loop_records))
        _progress("(c) rules", report["rules"])
    if args.memory:
        sizes = args.memory
        report["memory"] = memory_by_size(sizes, args.database_url, known)
        _progress("(d) memory", report["memory"])
    if args.mappings:
        report["definitions"] = [definitions_bench.measure(n) for n in args.mappings]
        _progress("(e) definitions", report["definitions"])
    report["goals"] = goals(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out / f'{args.name}.md'} and {args.out / f'{args.name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
