import datetime as dt
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from esm_dagster.catalog.db import database_url, get_engine, normalize_url
from esm_dagster.catalog.migrate import current_revision, upgrade
from esm_dagster.catalog.models import (
    AuthenticationType,
    Base,
    ExternalSystemMapping,
    SyncFrequency,
    SyncStatus,
    SystemType,
)
from esm_dagster.catalog.types import ExactDecimal, UTCDateTime

HEAD = "0007_two_way_sync"

SEED_COLUMNS = {
    "id", "system_name", "system_type", "provider_name", "api_endpoint", "api_version",
    "authentication_type", "credentials", "mapping_rules", "sync_frequency", "last_sync_at",
    "sync_status", "error_count", "last_error_message", "is_active", "priority", "timeout_seconds",
    "retry_attempts", "created_by_user_id", "created_at", "updated_at",
}  # fmt: skip


def test_migration_matches_models_on_each_engine(blank_db: str) -> None:
    upgrade(blank_db)
    assert current_revision(blank_db) == HEAD
    with get_engine(blank_db).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
        columns = {c["name"] for c in sa.inspect(conn).get_columns("external_system_mapping")}
    assert columns == SEED_COLUMNS
    upgrade(blank_db)  # idempotent


def test_seed_enum_values() -> None:
    assert [m.value for m in SystemType] == [
        "payment_gateway", "email_service", "sms_provider", "social_media",
        "analytics", "crm", "erp", "booking_platform",
    ]  # fmt: skip
    assert [m.value for m in AuthenticationType] == ["api_key", "oauth2", "basic_auth", "jwt", "webhook"]
    assert [m.value for m in SyncFrequency] == ["real_time", "hourly", "daily", "weekly", "manual"]
    assert [m.value for m in SyncStatus] == ["active", "inactive", "error", "maintenance"]


def test_postgres_uses_native_types(db_url: str) -> None:
    engine = get_engine(db_url)
    if engine.dialect.name != "postgresql":
        return
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                sa.text(
                    "select column_name, udt_name from information_schema.columns "
                    "where table_name = 'external_system_mapping' and table_schema = current_schema()"
                )
            ).all()
        )
    assert types["id"] == "uuid"
    assert types["credentials"] == "jsonb" and types["mapping_rules"] == "jsonb"
    assert types["last_sync_at"] == "timestamptz"
    assert types["system_type"] == "system_type" and types["sync_status"] == "sync_status"


def test_enum_rejects_unknown_value(db_url: str) -> None:
    engine = get_engine(db_url)
    with engine.connect() as conn:
        try:
            conn.execute(
                sa.text(
                    "insert into external_system_mapping (id, system_name, system_type, provider_name, "
                    "api_endpoint, authentication_type, credentials, mapping_rules, sync_frequency, sync_status, "
                    "error_count, is_active, priority, timeout_seconds, retry_attempts, created_at, updated_at) "
                    "values (:id, 'x', 'fax_machine', 'p', 'https://x', 'api_key', '{}', '{}', 'daily', 'active', "
                    "0, true, 1, 1, 1, :now, :now)"
                ),
                {"id": str(uuid.uuid4()).replace("-", ""), "now": "2026-01-01 00:00:00"},
            )
            raised = False
        except sa.exc.DBAPIError:
            raised = True
    # PostgreSQL's native enum refuses it at the database; on SQLite the model refuses it.
    assert raised or engine.dialect.name == "sqlite"
    import pytest

    from esm_dagster.catalog.db import session_factory

    with pytest.raises((LookupError, sa.exc.StatementError)), session_factory(db_url).begin() as session:
        session.add(
            ExternalSystemMapping(
                system_name="x", system_type="fax_machine", provider_name="p", api_endpoint="https://x",
                authentication_type="api_key", credentials={}, mapping_rules={},
            )
        )  # fmt: skip


def test_timestamps_come_back_aware_and_decimals_exact(db_url: str) -> None:
    engine = get_engine(db_url)
    table = sa.Table(
        "t_types", sa.MetaData(), sa.Column("ts", UTCDateTime()), sa.Column("amount", ExactDecimal())
    )
    bangkok = dt.timezone(dt.timedelta(hours=7))
    moment = dt.datetime(2026, 3, 8, 9, 30, tzinfo=bangkok)
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"ts": moment, "amount": Decimal("12345678901234.567")}])
        row = conn.execute(sa.select(table)).one()
    assert row.ts == moment and row.ts.tzinfo is not None
    assert row.amount == Decimal("12345678901234.567") and isinstance(row.amount, Decimal)


def test_orm_round_trip_enums(db_url: str) -> None:
    from esm_dagster.catalog.db import session_factory

    with session_factory(db_url).begin() as session:
        session.add(
            ExternalSystemMapping(
                system_name="X",
                system_type=SystemType.CRM,
                provider_name="hubspot",
                api_endpoint="https://api.hubapi.com",
                authentication_type=AuthenticationType.OAUTH2,
                credentials={},
                mapping_rules={},
                sync_frequency=SyncFrequency.REAL_TIME,
            )
        )
    with session_factory(db_url)() as session:
        row = session.scalars(sa.select(ExternalSystemMapping)).one()
        assert row.system_type is SystemType.CRM and row.sync_frequency is SyncFrequency.REAL_TIME
        assert row.sync_status is SyncStatus.ACTIVE and row.error_count == 0
        assert row.created_at.tzinfo is not None
        assert "credentials" not in repr(row)


def test_normalize_url_prefers_psycopg2() -> None:
    assert normalize_url("postgresql://u@h/db").startswith("postgresql+psycopg2://")
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://app:s3cr3t-pw@db.internal/esm", "names a mysql database (mysql://app:***@db.internal/esm)"),
        ("mysql+pymysql://app:s3cr3t-pw@db/esm", "names a mysql database"),
        ("mssql+pyodbc://app:s3cr3t-pw@db/esm", "names a mssql database"),
        ("app:s3cr3t-pw@db.internal/esm", "'db.internal/esm' is not a database URL"),
        ("postgresql://app:s3cr3t@pw@db.internal/esm", "a password with a raw '@' must be written %40"),
    ],
)
def test_a_catalog_url_of_an_unsupported_kind_is_refused_by_name_without_its_password(
    url: str, says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once "No module named 'MySQLdb'" (new-user finding): read as a missing install."""
    monkeypatch.setenv("ESM_DATABASE_URL", url)
    with pytest.raises(ValueError, match="ESM_DATABASE_URL") as caught:
        database_url()
    assert says in str(caught.value) and "s3cr3t" not in str(caught.value)
    assert "pw@" not in str(caught.value)


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u@h/db", "sqlite:///x.db"])
def test_the_supported_catalog_urls_pass(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESM_DATABASE_URL", url)
    assert database_url() == normalize_url(url)


def test_downgrade_to_initial_and_back(blank_db: str) -> None:
    from esm_dagster.catalog.migrate import downgrade

    upgrade(blank_db)
    downgrade(blank_db, "0001_initial")
    assert current_revision(blank_db) == "0001_initial"
    with get_engine(blank_db).connect() as conn:
        assert not sa.inspect(conn).has_table("task")
    upgrade(blank_db)
    assert current_revision(blank_db) == HEAD


def test_rate_limits_migration_adds_and_drops_only_its_table(blank_db: str) -> None:
    from esm_dagster.catalog.migrate import downgrade

    upgrade(blank_db, "0002_operations")
    with get_engine(blank_db).connect() as conn:
        before = set(sa.inspect(conn).get_table_names())
    assert "esm_rate_limit" not in before
    upgrade(blank_db, "0003_rate_limits")
    with get_engine(blank_db).connect() as conn:
        inspector = sa.inspect(conn)
        assert set(inspector.get_table_names()) == before | {"esm_rate_limit"}
        assert inspector.get_pk_constraint("esm_rate_limit")["constrained_columns"] == ["bucket_key"]
        assert {c["name"] for c in inspector.get_columns("esm_rate_limit")} == {
            "bucket_key", "provider_name", "tokens", "refilled_at", "capacity", "per_second", "updated_at",
        }  # fmt: skip
    downgrade(blank_db, "0002_operations")
    assert current_revision(blank_db) == "0002_operations"
    with get_engine(blank_db).connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == before


def test_webhook_inbox_migration_adds_and_drops_only_its_table(blank_db: str) -> None:
    from esm_dagster.catalog.migrate import downgrade

    upgrade(blank_db, "0003_rate_limits")
    with get_engine(blank_db).connect() as conn:
        before = set(sa.inspect(conn).get_table_names())
    upgrade(blank_db, "0004_webhook_inbox")
    with get_engine(blank_db).connect() as conn:
        inspector = sa.inspect(conn)
        assert set(inspector.get_table_names()) == before | {"esm_webhook_inbox"}
        assert {c["name"] for c in inspector.get_columns("esm_webhook_inbox")} >= {
            "provider", "mapping_id", "event_id", "event_type", "received_at", "payload", "processed_at",
        }  # fmt: skip
        (unique,) = inspector.get_unique_constraints("esm_webhook_inbox")
        assert unique["column_names"] == ["mapping_id", "event_id"]
    downgrade(blank_db, "0003_rate_limits")
    with get_engine(blank_db).connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == before


def test_audit_log_migration_adds_its_table_and_append_only_triggers(blank_db: str) -> None:
    from esm_dagster.catalog.migrate import downgrade

    upgrade(blank_db, "0004_webhook_inbox")
    with get_engine(blank_db).connect() as conn:
        before = set(sa.inspect(conn).get_table_names())
    upgrade(blank_db, "0005_audit_log")
    engine = get_engine(blank_db)
    with engine.begin() as conn:
        assert set(sa.inspect(conn).get_table_names()) == before | {"esm_audit_log"}
        conn.execute(
            sa.text(
                "insert into esm_audit_log (at, actor, source, action, outcome, details) "
                "values (:at, 'system', 'system', 'keys.rotated', 'ok', '{}')"
            ),
            {"at": dt.datetime.now(dt.UTC)},
        )
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(sa.text("delete from esm_audit_log"))
    downgrade(blank_db, "0004_webhook_inbox")
    with get_engine(blank_db).connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == before
    upgrade(blank_db)  # and up again: the PostgreSQL function was dropped with the table
    assert current_revision(blank_db) == HEAD


def test_outbound_messages_migration_adds_its_table_and_keeps_the_shared_enum(blank_db: str) -> None:
    from esm_dagster.catalog.migrate import downgrade

    upgrade(blank_db, "0005_audit_log")
    with get_engine(blank_db).connect() as conn:
        before = set(sa.inspect(conn).get_table_names())
    upgrade(blank_db, "0006_outbound_messages")
    engine = get_engine(blank_db)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        assert set(inspector.get_table_names()) == before | {"esm_outbound_message"}
        (unique,) = inspector.get_unique_constraints("esm_outbound_message")
        assert unique["column_names"] == ["idempotency_key"]
    row = {
        "id": uuid.uuid4().hex, "st": "sms_provider", "now": dt.datetime.now(dt.UTC), "key": "k1",
    }  # fmt: skip
    insert = (
        "insert into esm_outbound_message (id, system_type, recipient, body, payload, idempotency_key, "
        "status, attempts, routing, created_at) values (:id, :st, '+15550100', 'hi', '{}', :key, "
        ":status, 0, '[]', :now)"
    )
    with engine.begin() as conn:
        conn.execute(sa.text(insert), {**row, "status": "queued"})
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # same key: one message
        conn.execute(sa.text(insert), {**row, "id": uuid.uuid4().hex, "status": "queued"})
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:  # no such status
        conn.execute(sa.text(insert), {**row, "id": uuid.uuid4().hex, "key": "k2", "status": "lost"})
    downgrade(blank_db, "0005_audit_log")
    with get_engine(blank_db).connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == before
    upgrade(blank_db)  # the shared system_type enum survived the downgrade and is not recreated
    assert current_revision(blank_db) == HEAD
