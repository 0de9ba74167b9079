"""The dispatcher against real loopback receivers and a real catalog (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select

from esm_dagster.alerts import (
    Alert,
    AlertDispatcher,
    Channel,
    DeliveryStatus,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    load_channels,
)
from esm_dagster.catalog.db import session_factory
from esm_dagster.catalog.models import (
    AlertDelivery,
    AuthenticationType,
    ExternalSystemMapping,
    SystemType,
)
from esm_dagster.security.secret import Secret
from esm_dagster_tests.alerts.receivers import (
    HOOK_AUTH,
    HOOK_PATH,
    SLACK_PATH,
    SLACK_TOKEN,
    SMTP_PASSWORD,
    SMTP_USER,
    HttpReceiver,
    SmtpReceiver,
    free_port,
)


def _channels(http: HttpReceiver, smtp_port: int, *, login: bool = False) -> list[Channel]:
    return [
        SlackChannel(name="slack", url=Secret(http.url(SLACK_PATH))),
        WebhookChannel(
            name="hook", url=Secret(http.url(HOOK_PATH)), headers={"Authorization": Secret(HOOK_AUTH)}
        ),
        EmailChannel(
            name="mail",
            host="127.0.0.1",
            port=smtp_port,
            sender="esm@club.example",
            to=("data-eng@club.example", "ops@club.example"),
            username=SMTP_USER if login else None,
            password=Secret(SMTP_PASSWORD) if login else None,
        ),
    ]


def _alert(run_id: str = "run-0001", message: str = "GET /v1/charges answered 500 three times") -> Alert:
    return Alert.run_failure(
        run_id=run_id,
        message=message,
        mapping_name="stripe_charges",
        asset_key="esm/stripe/charges",
        partition="2026-11-01",
        error_class="ProviderServerError",
    )


def _rows(db_url: str, dedup_key: str) -> dict[str, AlertDelivery]:
    with session_factory(db_url)() as session:
        rows = session.scalars(select(AlertDelivery).where(AlertDelivery.dedup_key == dedup_key)).all()
    return {row.channel: row for row in rows}


def test_each_channel_receives_one_message(
    db_url: str, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    dispatcher = AlertDispatcher(db_url, _channels(http_receiver, smtp_receiver.port, login=True))
    alert = _alert()
    results = dispatcher.send(alert)

    assert [(r.channel, r.status, r.attempts) for r in results] == [
        ("slack", DeliveryStatus.SENT, 1),
        ("hook", DeliveryStatus.SENT, 1),
        ("mail", DeliveryStatus.SENT, 1),
    ]
    (slack,) = http_receiver.received(SLACK_PATH)
    assert slack["json"]["text"].startswith("[ESM error] Run failed: stripe_charges")
    blocks = slack["json"]["blocks"]
    assert blocks[0]["type"] == "header"
    shown = str(blocks)
    for part in (
        "esm/stripe/charges",
        "2026-11-01",
        "ProviderServerError",
        "answered 500",
        str(alert.run_url),
    ):
        assert part in shown

    (hook,) = http_receiver.received(HOOK_PATH)
    assert hook["headers"]["authorization"] == HOOK_AUTH
    assert hook["headers"]["idempotency-key"] == alert.dedup_key
    assert hook["json"]["run_url"] == "http://127.0.0.1:3000/runs/run-0001"
    assert hook["json"]["subject"] == alert.subject and hook["json"]["partition"] == "2026-11-01"

    ((recipients, mail),) = smtp_receiver.messages
    assert recipients == ["data-eng@club.example", "ops@club.example"]
    assert mail["Subject"] == alert.subject
    body = mail.get_content()
    assert str(alert.run_url) in body and "ProviderServerError" in body

    rows = _rows(db_url, alert.dedup_key)
    assert {name: (row.status, row.attempts, row.error) for name, row in rows.items()} == {
        "slack": ("sent", 1, None),
        "hook": ("sent", 1, None),
        "mail": ("sent", 1, None),
    }
    assert all(row.sent_at is not None and row.subject == alert.subject for row in rows.values())


def test_same_alert_twice_delivers_once(
    db_url: str, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    dispatcher = AlertDispatcher(db_url, _channels(http_receiver, smtp_receiver.port))
    dispatcher.send(_alert())
    again = AlertDispatcher(db_url, _channels(http_receiver, smtp_receiver.port)).send(_alert())

    assert {r.status for r in again} == {DeliveryStatus.DUPLICATE}
    assert len(http_receiver.received(SLACK_PATH)) == 1
    assert len(http_receiver.received(HOOK_PATH)) == 1
    assert len(smtp_receiver.messages) == 1
    # A different event is a different alert.
    dispatcher.send(_alert(run_id="run-0002"))
    assert len(http_receiver.received(SLACK_PATH)) == 2


def test_concurrent_sends_deliver_once(
    db_url: str, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    threads_n = 6
    barrier = threading.Barrier(threads_n)
    results: list[list[DeliveryStatus]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        # One dispatcher per thread, as separate sensor processes would have.
        dispatcher = AlertDispatcher(db_url, _channels(http_receiver, smtp_receiver.port))
        barrier.wait()
        try:
            results.append([r.status for r in dispatcher.send(_alert())])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert len(results) == threads_n
    for column in zip(*results, strict=True):
        assert sorted(column).count(DeliveryStatus.SENT) == 1
    assert len(http_receiver.received(SLACK_PATH)) == 1
    assert len(http_receiver.received(HOOK_PATH)) == 1
    assert len(smtp_receiver.messages) == 1


def test_failing_channels_do_not_stop_others_and_retry_later(
    db_url: str, http_receiver: HttpReceiver
) -> None:
    smtp = SmtpReceiver(free_port())  # not started yet: connections are refused
    http_receiver.status[HOOK_PATH] = 500
    dispatcher = AlertDispatcher(db_url, _channels(http_receiver, smtp.port))
    alert = _alert()
    try:
        first = {r.channel: r for r in dispatcher.send(alert)}
        assert first["slack"].status == DeliveryStatus.SENT
        assert first["hook"].status == DeliveryStatus.FAILED
        assert first["hook"].error is not None and "HTTP 500" in first["hook"].error
        assert first["mail"].status == DeliveryStatus.FAILED
        assert first["mail"].error is not None and "ConnectionRefusedError" in first["mail"].error
        rows = _rows(db_url, alert.dedup_key)
        assert (rows["hook"].status, rows["hook"].attempts) == ("failed", 1)
        assert (rows["mail"].status, rows["mail"].attempts) == ("failed", 1)
        assert rows["hook"].error and rows["mail"].error and rows["hook"].sent_at is None

        # Receivers recover; the next send of the same alert delivers only what is missing.
        http_receiver.status.pop(HOOK_PATH)
        smtp.start()
        second = {r.channel: r for r in dispatcher.send(alert)}
        assert second["slack"].status == DeliveryStatus.DUPLICATE
        assert (second["hook"].status, second["hook"].attempts) == (DeliveryStatus.SENT, 2)
        assert (second["mail"].status, second["mail"].attempts) == (DeliveryStatus.SENT, 2)
        rows = _rows(db_url, alert.dedup_key)
        assert {name: (r.status, r.attempts, r.error) for name, r in rows.items()} == {
            "slack": ("sent", 1, None),
            "hook": ("sent", 2, None),
            "mail": ("sent", 2, None),
        }
        assert {r.status for r in dispatcher.send(alert)} == {DeliveryStatus.DUPLICATE}
        assert len(http_receiver.received(SLACK_PATH)) == 1
        assert len(http_receiver.received(HOOK_PATH)) == 1
        assert len(smtp.messages) == 1
    finally:
        smtp.stop()


def test_secrets_are_redacted_everywhere(
    db_url: str,
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="esm_dagster.alerts")
    dead_token = "deadHookToken0123456789abcdef"
    dead_url = f"http://127.0.0.1:{free_port()}/hooks/{dead_token}?token=queryTokenSecret42"
    channels = [
        *_channels(http_receiver, smtp_receiver.port, login=True),
        WebhookChannel(name="dead", url=Secret(dead_url)),
    ]
    dispatcher = AlertDispatcher(db_url, channels, secrets=["dispatcher-wide-secret"])
    leaked = (
        f"charge failed with key sk_test_4eC39HqLyjWDarjtT1zdp7dc, client secret hunter2-club, "
        f"header {HOOK_AUTH}, smtp {SMTP_PASSWORD}, slack {http_receiver.url(SLACK_PATH)}, "
        f"dead {dead_url}, dispatcher-wide-secret"
    )
    alert = _alert(message=leaked)
    results = {r.channel: r for r in dispatcher.send(alert, secrets=[Secret("hunter2-club")])}
    assert results["dead"].status == DeliveryStatus.FAILED
    assert all(results[c].status == DeliveryStatus.SENT for c in ("slack", "hook", "mail"))

    secrets = [
        "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "hunter2-club",
        "hook-header-secret",
        SMTP_PASSWORD,
        SLACK_TOKEN,
        dead_token,
        "queryTokenSecret42",
        "dispatcher-wide-secret",
    ]
    delivered = [str(p["json"]) for p in http_receiver.posts]
    delivered += [m.as_string() for _, m in smtp_receiver.messages]
    rows = _rows(db_url, alert.dedup_key)
    stored = [f"{r.subject} {r.error} {r.dedup_key}" for r in rows.values()]
    outputs = [*delivered, *stored, caplog.text, repr(results)]
    assert len(delivered) == 3
    for text in outputs:
        for secret in secrets:
            assert secret not in text
    assert "***" in delivered[0]
    # The unreachable webhook's stored error says what happened, without its URL.
    assert rows["dead"].status == "failed"
    assert rows["dead"].error and "ConnectError" in rows["dead"].error
    assert dead_token not in rows["dead"].error and "/hooks/" not in rows["dead"].error


def test_alert_for_a_real_and_a_deleted_mapping(db_url: str, http_receiver: HttpReceiver) -> None:
    mapping_id = uuid.uuid4()
    with session_factory(db_url)() as session:
        session.add(
            ExternalSystemMapping(
                id=mapping_id,
                system_name="stripe_charges",
                system_type=SystemType.PAYMENT_GATEWAY,
                provider_name="stripe",
                api_endpoint="https://api.stripe.com",
                authentication_type=AuthenticationType.API_KEY,
            )
        )
        session.commit()
    dispatcher = AlertDispatcher(
        db_url, [SlackChannel(name="slack", url=Secret(http_receiver.url(SLACK_PATH)))]
    )
    real = Alert.mapping_error(mapping_id=mapping_id, episode="e1", message="3 failed runs")
    gone = Alert.mapping_error(mapping_id=uuid.uuid4(), episode="e1", message="3 failed runs")
    assert [r.status for r in dispatcher.send(real)] == [DeliveryStatus.SENT]
    assert [r.status for r in dispatcher.send(gone)] == [DeliveryStatus.SENT]
    assert [r.status for r in dispatcher.send(gone)] == [DeliveryStatus.DUPLICATE]
    assert _rows(db_url, real.dedup_key)["slack"].mapping_id == mapping_id
    assert _rows(db_url, gone.dedup_key)["slack"].mapping_id is None
    assert len(http_receiver.received(SLACK_PATH)) == 2


def test_abandoned_claims_are_taken_over_after_the_lease(db_url: str, http_receiver: HttpReceiver) -> None:
    channel = SlackChannel(name="slack", url=Secret(http_receiver.url(SLACK_PATH)))
    old, fresh = _alert(run_id="crashed"), _alert(run_id="in-flight")
    now = dt.datetime.now(dt.UTC)
    with session_factory(db_url)() as session:
        for alert, created in ((old, now - dt.timedelta(hours=1)), (fresh, now)):
            session.add(
                AlertDelivery(
                    dedup_key=alert.dedup_key,
                    channel="slack",
                    kind=alert.kind,
                    subject=alert.subject,
                    status="pending",
                    attempts=1,
                    created_at=created,
                )
            )
        session.commit()
    dispatcher = AlertDispatcher(db_url, [channel])
    assert [(r.status, r.attempts) for r in dispatcher.send(old)] == [(DeliveryStatus.SENT, 2)]
    assert [r.status for r in dispatcher.send(fresh)] == [DeliveryStatus.DUPLICATE]
    assert len(http_receiver.received(SLACK_PATH)) == 1


def test_yaml_configured_dispatcher_end_to_end(
    db_url: str,
    http_receiver: HttpReceiver,
    smtp_receiver: SmtpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_ESM_SLACK_URL", http_receiver.url(SLACK_PATH))
    monkeypatch.setenv("TEST_ESM_HOOK_AUTH", HOOK_AUTH)
    monkeypatch.setenv("TEST_ESM_SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("ESM_DAGSTER_UI_URL", "http://127.0.0.1:3999")
    config = tmp_path / "alerts.yaml"
    config.write_text(
        f"""
channels:
  slack: {{type: slack, url: {{env: TEST_ESM_SLACK_URL}}}}
  hook:
    type: webhook
    url: {http_receiver.url(HOOK_PATH)}
    headers: {{Authorization: {{env: TEST_ESM_HOOK_AUTH}}}}
  mail:
    type: email
    host: 127.0.0.1
    port: {smtp_receiver.port}
    from: esm@club.example
    to: data-eng@club.example
    username: {SMTP_USER}
    password: {{env: TEST_ESM_SMTP_PASSWORD}}
"""
    )
    monkeypatch.setenv("ESM_ALERTS_FILE", str(config))
    monkeypatch.setenv("ESM_DATABASE_URL", db_url)
    dispatcher = AlertDispatcher.from_env()
    assert [c.name for c in dispatcher.channels] == ["slack", "hook", "mail"]
    results = dispatcher.send(_alert(run_id="yaml-run"))
    assert [r.status for r in results] == [DeliveryStatus.SENT] * 3
    (hook,) = http_receiver.received(HOOK_PATH)
    assert hook["json"]["run_url"] == "http://127.0.0.1:3999/runs/yaml-run"
    assert hook["headers"]["authorization"] == HOOK_AUTH
    assert len(smtp_receiver.messages) == 1 and len(http_receiver.received(SLACK_PATH)) == 1
    assert load_channels(config)[0].name == "slack"


def test_wrong_smtp_password_is_a_recorded_failure(
    db_url: str, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    mail = EmailChannel(
        name="mail",
        host="127.0.0.1",
        port=smtp_receiver.port,
        sender="esm@club.example",
        to=("data-eng@club.example",),
        username=SMTP_USER,
        password=Secret("wrong-password-value"),
    )
    (result,) = AlertDispatcher(db_url, [mail]).send(_alert())
    assert result.status == DeliveryStatus.FAILED
    assert result.error and "SMTPAuthenticationError" in result.error
    assert "wrong-password-value" not in (_rows(db_url, _alert().dedup_key)["mail"].error or "")
    assert smtp_receiver.messages == []


def test_unreachable_catalog_still_delivers(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    unmigrated = f"sqlite:///{tmp_path / 'empty.db'}"
    dispatcher = AlertDispatcher(
        unmigrated, [SlackChannel(name="slack", url=Secret(http_receiver.url(SLACK_PATH)))]
    )
    (result,) = dispatcher.send(_alert())
    assert (result.status, result.recorded) == (DeliveryStatus.SENT, False)
    assert len(http_receiver.received(SLACK_PATH)) == 1


def test_duplicate_channel_names_and_wrong_arguments_are_programming_errors(db_url: str) -> None:
    slack = SlackChannel(name="x", url=Secret("https://hooks.example.com/a"))
    with pytest.raises(ValueError, match="repeated: x"):
        AlertDispatcher(db_url, [slack, slack])
    with pytest.raises(TypeError):
        AlertDispatcher(db_url, [slack]).send("run failed")  # type: ignore[arg-type]
