from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from esm_dagster.alerts import (
    AlertConfigError,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    channels_from_env,
    load_channels,
)

SLACK_URL = "https://hooks.slack.com/services/T0000/B0000/zzSecretSlackTokenzz0001"

YAML = """
channels:
  data-eng-slack:
    type: slack
    url: {env: TEST_ESM_SLACK_URL}
  oncall-mail:
    type: email
    host: smtp.example.com
    starttls: true
    username: esm-alerts
    password: {env: TEST_ESM_SMTP_PASSWORD}
    from: esm@club.example
    to: [data-eng@club.example, ops@club.example]
  pager:
    type: webhook
    url: https://hooks.example.com/esm
    timeout: 2.5
    headers:
      Authorization: {env: TEST_ESM_PAGER_AUTH}
      X-Team: data
"""


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_ESM_SLACK_URL", SLACK_URL)
    monkeypatch.setenv("TEST_ESM_SMTP_PASSWORD", "smtp-secret-value")
    monkeypatch.setenv("TEST_ESM_PAGER_AUTH", "Bearer pager-secret-value")


@pytest.mark.usefixtures("secrets_env")
def test_yaml_file_with_env_references(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "alerts.yaml"
    path.write_text(YAML)
    monkeypatch.setenv("ESM_ALERTS_FILE", str(path))
    slack, mail, pager = channels_from_env()

    assert isinstance(slack, SlackChannel) and slack.url.reveal() == SLACK_URL
    assert isinstance(mail, EmailChannel)
    assert (mail.host, mail.port, mail.starttls, mail.username) == (
        "smtp.example.com",
        587,
        True,
        "esm-alerts",
    )
    assert mail.to == ("data-eng@club.example", "ops@club.example")
    assert mail.password is not None and mail.password.reveal() == "smtp-secret-value"
    assert isinstance(pager, WebhookChannel) and pager.timeout == 2.5
    assert pager.headers["Authorization"].reveal() == "Bearer pager-secret-value"
    assert pager.headers["X-Team"].reveal() == "data"

    shown = repr([slack, mail, pager])
    for secret in ("zzSecretSlackTokenzz0001", "smtp-secret-value", "pager-secret-value"):
        assert secret not in shown


def test_list_form_and_defaults() -> None:
    (hook,) = load_channels(
        {"channels": [{"name": "local", "type": "webhook", "url": "http://127.0.0.1:9/x"}]}
    )
    assert isinstance(hook, WebhookChannel) and hook.timeout == 5.0 and hook.name == "local"
    assert load_channels({"channels": []}) == []


def test_no_file_means_no_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESM_ALERTS_FILE", raising=False)
    assert channels_from_env() == []


@pytest.mark.parametrize(
    ("channel", "pattern"),
    [
        ({"type": "pagerduty", "url": "https://x.example"}, r"channel 'c1': field 'type' is 'pagerduty'"),
        ({"url": "https://x.example"}, r"channel 'c1': field 'type' is required"),
        ({"type": "slack"}, r"channel 'c1': field 'url' is required"),
        ({"type": "webhook", "url": ""}, r"channel 'c1': field 'url' is required"),
        (
            {"type": "slack", "url": "ftp://x.example/a"},
            r"channel 'c1': field 'url' must be an http\(s\) URL",
        ),
        ({"type": "slack", "url": {"env": "TEST_ESM_UNSET_VAR"}}, r"field 'url' reads environment variable"),
        ({"type": "slack", "url": {"file": "/etc/x"}}, r"field 'url' must be a value or \{env"),
        (
            {"type": "slack", "url": "https://x.example", "tiemout": 3},
            r"channel 'c1': unknown field 'tiemout'",
        ),
        (
            {"type": "slack", "url": "https://x.example", "timeout": "soon"},
            r"field 'timeout' must be a number",
        ),
        ({"type": "email", "host": "smtp.x", "from": "a@x"}, r"channel 'c1': field 'to' is required"),
        (
            {"type": "email", "host": "smtp.x", "from": "a@x", "to": ["nobody"]},
            r"field 'to' must be an e-mail",
        ),
        ({"type": "email", "from": "a@x", "to": "b@x"}, r"channel 'c1': field 'host' is required"),
        (
            {"type": "email", "host": "smtp.x", "from": "a@x", "to": "b@x", "password": "pw12345"},
            r"field 'username' is required when a password is set",
        ),
        (
            {"type": "email", "host": "smtp.x", "from": "a@x", "to": "b@x", "username": "u", "password": "p"},
            r"field 'starttls' must be true",
        ),
        (
            {"type": "webhook", "url": "https://x.example", "headers": {"Bad Header": "v"}},
            r"field 'headers' has an invalid header name",
        ),
    ],
)
def test_bad_config_names_the_channel_and_field(
    channel: dict[str, Any], pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_ESM_UNSET_VAR", raising=False)
    with pytest.raises(AlertConfigError, match=pattern):
        load_channels({"channels": {"c1": channel}})


def test_url_errors_never_quote_the_secret_url() -> None:
    url = "http://hooks.example.com/services/T0/B0/plainHttpTokenSecret0001"
    with pytest.raises(AlertConfigError) as info:
        load_channels({"channels": {"slack": {"type": "slack", "url": url}}})
    message = str(info.value)
    assert "must use https" in message and "hooks.example.com" in message
    assert "plainHttpTokenSecret0001" not in message


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(AlertConfigError, match="cannot read"):
        load_channels(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels:\n  s:\n    type: slack\n    url: [https://hooks.example.com/SECRETinYAML123\n")
    with pytest.raises(AlertConfigError, match="not valid YAML") as info:
        load_channels(bad)
    assert "SECRETinYAML123" not in str(info.value)
    top = tmp_path / "top.yaml"
    top.write_text("chanels: {}\n")
    with pytest.raises(AlertConfigError, match="unknown top-level key 'chanels'"):
        load_channels(top)
    dup = {"channels": [{"name": "a", "type": "slack", "url": "https://x"}] * 2}
    with pytest.raises(AlertConfigError, match="channel 'a': defined twice"):
        load_channels(dup)
