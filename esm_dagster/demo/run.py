"""`esm demo` and `esm ui`: the main job on an embedded SQLite catalog and the local emulators.

Everything lives under `ESM_HOME` (default `./.esm`): the catalog, the Dagster instance
(`DAGSTER_HOME`), and a generated Fernet key file, so a second run sees the first one's state and
`esm ui` shows the demo's runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from esm_dagster.catalog.db import database_url, esm_home, session_factory

DEMO_STRIPE_KEY = "sk_test_esmdemo4eC39HqLyjWDarjtT1zdp7dc"  # emulator-only test key, not a real account
DEFAULT_STRIPE_PORT = 12111
DEMO_OWNER = "data-team@padel.example"
REPO_ROOT = Path(__file__).resolve().parents[2]


def prepare_environment() -> Path:
    """Point the catalog, the vault and Dagster at `ESM_HOME`; create what is missing."""
    home = esm_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("ESM_HOME", str(home))
    # Sandbox mode: the demo's mappings point at the emulators on loopback (security.endpoints).
    os.environ.setdefault("ESM_ALLOW_LOOPBACK", "1")
    if not os.environ.get("ESM_FERNET_KEYS"):
        key_file = Path(os.environ.setdefault("ESM_FERNET_KEYS_FILE", str(home / "fernet.keys")))
        if not key_file.exists():
            from esm_dagster.security.vault import generate_key

            key_file.write_text(generate_key() + "\n")
            key_file.chmod(0o600)
    operator = home / "operator"
    if not operator.exists():
        # The demo catalog's admin runs the `esm` commands after `make demo` (README); a person
        # who adds their own operators changes this file or sets ESM_USER.
        operator.write_text(DEMO_OWNER + "\n")
    dagster_home = Path(os.environ.setdefault("DAGSTER_HOME", str(home / "dagster_home")))
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    source = REPO_ROOT / "dagster.yaml"
    if not target.exists():
        if source.exists():
            shutil.copyfile(source, target)
        else:
            target.write_text("telemetry:\n  enabled: false\n")
    return home


def demo_mappings(stripe_url: str) -> list[dict[str, Any]]:
    text = resources.files("esm_dagster.demo").joinpath("catalog.yaml").read_text(encoding="utf-8")
    text = text.replace("{stripe_url}", stripe_url).replace("{stripe_key}", DEMO_STRIPE_KEY)
    return list(yaml.safe_load(text)["mappings"])


def register_demo_catalog(url: str, stripe_url: str) -> None:
    from sqlalchemy import select

    from esm_dagster.catalog.mappings import MappingInput, upsert_mapping
    from esm_dagster.catalog.migrate import upgrade
    from esm_dagster.catalog.models import User, UserRole
    from esm_dagster.security.vault import Vault

    upgrade(url)
    vault = Vault.from_env()
    with session_factory(url).begin() as session:
        if session.scalar(select(User).where(User.email == DEMO_OWNER)) is None:
            session.add(User(email=DEMO_OWNER, full_name="Club data team", role=UserRole.ADMIN))
            session.flush()
        for raw in demo_mappings(stripe_url):
            upsert_mapping(session, vault, MappingInput.model_validate(raw))


def start_stripe_emulator(port: int | None, customers: int = 200, charges: int = 1000) -> Any:
    import errno

    from esm_dagster.sandbox.stripe import StripeEmulator

    port = port or int(os.environ.get("ESM_STRIPE_EMULATOR_PORT", DEFAULT_STRIPE_PORT))
    emulator = StripeEmulator(
        api_keys=[DEMO_STRIPE_KEY],
        customers=customers,
        charges=charges,
        seed=7,
        port=port,
    )
    try:
        emulator.start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        raise RuntimeError(
            f"the Stripe emulator cannot listen on 127.0.0.1:{port}: port {port} is already in use "
            "(another `esm demo`/`esm ui` or emulator?); stop that process or set "
            "ESM_STRIPE_EMULATOR_PORT (or --port) to a free port"
        ) from None
    return emulator


def table_counts(url: str, tables: list[str]) -> dict[str, int]:
    import sqlalchemy as sa

    from esm_dagster.catalog.db import get_engine

    counts = {}
    with get_engine(url).connect() as conn:
        inspector = sa.inspect(conn)
        for table in tables:
            if inspector.has_table(table):
                counts[table] = conn.execute(
                    sa.select(sa.func.count()).select_from(sa.table(table))
                ).scalar_one()
    return counts


def run_demo(customers: int = 200, charges: int = 1000, port: int | None = None) -> int:
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)

    from esm_dagster.cli import format_table
    from esm_dagster.orchestration.loader import build_definitions, fetch_specs, usable_specs
    from esm_dagster.orchestration.schedules import build_groups
    from esm_dagster.orchestration.sensors import without_dagster_prefix

    prepare_environment()
    url = database_url()
    emulator = start_stripe_emulator(port, customers=customers, charges=charges)
    try:
        register_demo_catalog(url, emulator.url)
        defs = build_definitions(url)
        # The demo syncs its own mappings only: rows a person added to the same catalog (say the
        # README's emulator mapping, perhaps failing or with its circuit open) are theirs to run.
        demo_names = {m["system_name"] for m in demo_mappings(emulator.url)}
        specs = usable_specs(fetch_specs(url))
        others = [s for s in specs if s.system_name not in demo_names]
        # One run per cadence group job, without a partition: each mapping syncs incrementally
        # from its cursor (everything the first time, only what is new the second time).
        groups = build_groups([s for s in specs if s.system_name in demo_names])
        started = time.perf_counter()
        rows = []
        results = []
        failures: list[str] = []
        with dg.DagsterInstance.get() as instance:
            for group in groups:
                result = defs.resolve_job_def(group.job.name).execute_in_process(
                    instance=instance,
                    raise_on_error=False,
                    run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
                    tags={"esm/trigger": "demo"},
                    asset_selection=[dg.AssetKey(m.asset_key_path) for m in group.members],
                )
                results.append(result)
                for failure in result.get_step_failure_events():
                    data = failure.step_failure_data
                    message = data.error.message if data.error is not None else "failed"
                    first_line = without_dagster_prefix(message).splitlines()[0][:300]
                    failures.append(f"{failure.step_key}: {first_line}")
                for event in result.get_asset_materialization_events():
                    materialization = event.materialization
                    assert materialization is not None
                    meta = {k: v.value for k, v in materialization.metadata.items()}
                    rows.append(
                        {
                            "asset": materialization.asset_key.to_user_string(),
                            "read": meta.get("records_read"),
                            "written": meta.get("records_written"),
                            "rejected": meta.get("records_rejected"),
                            "pages": meta.get("pages"),
                            "seconds": meta.get("duration_seconds"),
                        }
                    )
        success = all(r.success for r in results)
        print()
        print(f"{len(results)} Dagster runs ({'success' if success else 'FAILED'}) "
              f"in {time.perf_counter() - started:.1f}s; DAGSTER_HOME={os.environ['DAGSTER_HOME']}")  # fmt: skip
        print(format_table(rows, ["asset", "read", "written", "rejected", "pages", "seconds"]))
        for line in failures:
            print(f"FAILED {line}")
        if others:
            names = ", ".join(f"{s.system_name}/{s.stream}" for s in others)
            print(f"Not part of the demo, not synced (`esm sync MAPPING`): {names}")
        counts = table_counts(url, ["user", "payment", "esm_quarantine"])
        print()
        print(format_table([{"table": k, "rows": v} for k, v in counts.items()], ["table", "rows"]))
        print()
        print("Inspect: `make ui` (Dagster UI on http://127.0.0.1:3000), `esm mapping list`.")
        return 0 if success else 1
    finally:
        emulator.stop()


def run_ui(port: int | None = None, ui_port: int = 3000) -> int:
    """Serve the emulator in this process and run `dagster dev` on the demo catalog."""
    prepare_environment()
    emulator = start_stripe_emulator(port)
    # The demo mappings follow the emulator to whatever port it got this time (and exist even
    # when `make demo` never ran); re-registering keeps a person's enable/disable decisions.
    register_demo_catalog(database_url(), emulator.url)
    workspace = REPO_ROOT / "workspace.yaml"
    command = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(ui_port)]
    command += ["-w", str(workspace)] if workspace.exists() else ["-m", "esm_dagster.definitions"]
    print(f"Stripe emulator on {emulator.url}; Dagster UI on http://127.0.0.1:{ui_port}")
    try:
        # Not from the repository: Dagster warns about the dagster.yaml it finds in its working
        # folder (that file is the template `prepare_environment` copies into DAGSTER_HOME).
        return subprocess.call(command, cwd=esm_home())  # noqa: S603
    except KeyboardInterrupt:
        return 0
    finally:
        emulator.stop()
