from __future__ import annotations

import uuid

import pytest

from esm_dagster.alerts import Alert, run_url


def _failure(**overrides: object) -> Alert:
    fields: dict[str, object] = {
        "run_id": "8c1f2e4a-0000-4000-8000-000000000001",
        "message": "Stripe answered 401 for GET /v1/charges",
        "mapping_id": "0b7c6f3e-1111-4111-8111-111111111111",
        "mapping_name": "stripe_charges",
        "asset_key": "esm/stripe/charges",
        "partition": "2026-11-01",
        "error_class": "ProviderAuthError",
    }
    fields.update(overrides)
    return Alert.run_failure(**fields)  # type: ignore[arg-type]


def test_subject_and_body_name_mapping_asset_partition_error_and_link() -> None:
    alert = _failure()
    assert alert.dedup_key == "run_failure:8c1f2e4a-0000-4000-8000-000000000001"
    assert alert.run_url == "http://127.0.0.1:3000/runs/8c1f2e4a-0000-4000-8000-000000000001"
    assert alert.mapping_id == uuid.UUID("0b7c6f3e-1111-4111-8111-111111111111")
    assert alert.subject == (
        "[ESM error] Run failed: stripe_charges (esm/stripe/charges [2026-11-01]) - ProviderAuthError"
    )
    for part in ("stripe_charges", "esm/stripe/charges", "2026-11-01", "ProviderAuthError", alert.run_url):
        assert part in alert.body
    assert alert.body.rstrip().endswith("Stripe answered 401 for GET /v1/charges")


def test_run_links_follow_the_configured_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESM_DAGSTER_UI_URL", "https://dagster.club.example/")
    assert _failure(run_id="r1").run_url == "https://dagster.club.example/runs/r1"
    assert run_url("r2", "http://localhost:3333") == "http://localhost:3333/runs/r2"


def test_subject_is_one_line_even_when_names_are_not() -> None:
    alert = _failure(mapping_name="evil\r\nBcc: everyone@example.com", error_class="X\nY")
    assert "\n" not in alert.subject and "\r" not in alert.subject


def test_mapping_error_keys_repeat_per_episode_only() -> None:
    mapping = uuid.uuid4()
    first = Alert.mapping_error(mapping_id=mapping, episode="2026-11-01T02:00Z", message="3 failed runs")
    again = Alert.mapping_error(mapping_id=mapping, episode="2026-11-01T02:00Z", message="still failing")
    later = Alert.mapping_error(mapping_id=mapping, episode="2026-11-03T09:00Z", message="3 failed runs")
    assert first.dedup_key == again.dedup_key != later.dedup_key
    assert first.severity == "critical" and first.run_url is None
    recovered = Alert.mapping_recovered(mapping_id=mapping, episode="2026-11-01T02:00Z")
    assert recovered.kind == "mapping_recovered" and recovered.severity == "info"
    assert recovered.dedup_key != first.dedup_key


def test_invalid_alerts_fail_where_they_are_built() -> None:
    with pytest.raises(ValueError, match="severity"):
        _failure(severity="loud")
    with pytest.raises(ValueError, match="dedup_key"):
        Alert(kind="task_opened", message="m", dedup_key="k" * 201)
    with pytest.raises(ValueError):
        _failure(mapping_id="not-a-uuid")


def test_redacted_scrubs_every_text_field() -> None:
    alert = _failure(
        message="401 for key sk_test_4eC39HqLyjWDarjtT1zdp7dc (client secret hunter2-club)",
        partition="hunter2-club",
    ).redacted(["hunter2-club"])
    text = alert.subject + alert.body + repr(alert.to_dict())
    assert "hunter2-club" not in text
    assert "sk_test_4eC39HqLyjWDarjtT1zdp7dc" not in text
    assert "***" in alert.message


def test_slack_payload_escapes_control_characters_and_respects_block_limits() -> None:
    from esm_dagster.alerts import SlackChannel
    from esm_dagster.security.secret import Secret

    alert = _failure(message="<!channel> a & b > c " + "x" * 5000, mapping_name="m" * 400)
    payload = SlackChannel(name="s", url=Secret("https://hooks.example.com/x")).payload(alert)
    assert "<!channel>" not in str(payload) and "&lt;!channel&gt; a &amp; b &gt; c" in str(payload)
    header, _facts, message, link = payload["blocks"]
    assert len(header["text"]["text"]) <= 150
    assert len(message["text"]["text"]) <= 3000
    assert link["text"]["text"] == f"<{alert.run_url}|Open the run>"
    assert payload["text"].startswith("[ESM error] Run failed")
