"""Alert channels, configured once in a YAML file (`ESM_ALERTS_FILE`).

Alert channels are operations configuration, not catalog data: they change with the on-call
rota, not with the mappings, and they hold credentials of their own (a Slack webhook URL is a
bearer token). So they live in one small file, and any value may be `{env: NAME}` so the file
itself can be committed without a secret in it.

```yaml
channels:
  data-eng-slack:
    type: slack
    url: {env: ESM_SLACK_WEBHOOK_URL}
  oncall-mail:
    type: email
    host: smtp.example.com
    port: 587
    starttls: true
    username: esm-alerts
    password: {env: ESM_SMTP_PASSWORD}
    from: esm@example.com
    to: [data-eng@example.com]
  pager:
    type: webhook
    url: https://hooks.example.com/esm
    headers: {Authorization: {env: ESM_PAGER_AUTH}}
```

`channels` may also be a list of objects with a `name`. Mistakes are reported when the file is
loaded, naming the channel and the field, and never quoting a secret value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from esm_dagster.alerts.channels import (
    DEFAULT_TIMEOUT,
    Channel,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
)
from esm_dagster.security.endpoints import is_loopback
from esm_dagster.security.secret import Secret

ENV_FILE = "ESM_ALERTS_FILE"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class AlertConfigError(ValueError):
    """The alerts configuration is wrong; the message says where (file, channel, field)."""


class _Fields:
    """One channel's raw settings, read field by field with errors that name the field."""

    def __init__(self, where: str, raw: Mapping[str, Any]) -> None:
        self.where = where
        self.raw = dict(raw)
        self.used: set[str] = {"type", "name"}

    def error(self, field: str, problem: str) -> AlertConfigError:
        return AlertConfigError(f"{self.where}: field {field!r} {problem}")

    def value(self, field: str, *, required: bool = False) -> Any:
        self.used.add(field)
        raw = self.raw.get(field)
        if isinstance(raw, Mapping):
            raw = self._env(field, raw)
        if raw is None or raw == "":
            if required:
                raise self.error(field, "is required")
            return None
        return raw

    def _env(self, field: str, raw: Mapping[str, Any]) -> Any:
        if set(raw) != {"env"} or not isinstance(raw["env"], str) or not raw["env"]:
            raise self.error(field, "must be a value or {env: VARIABLE_NAME}")
        value = os.environ.get(raw["env"])
        if value is None or value == "":
            raise self.error(field, f"reads environment variable {raw['env']}, which is not set")
        return value

    def text(self, field: str, *, required: bool = False) -> str | None:
        value = self.value(field, required=required)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.error(field, "must be a string")
        return str(value).strip()

    def secret(self, field: str, *, required: bool = False) -> Secret | None:
        value = self.value(field, required=required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(field, "must be a string (or {env: VARIABLE_NAME})")
        return Secret(value.strip())

    def number(self, field: str, default: float, *, integer: bool = False) -> Any:
        value = self.value(field)
        if value is None:
            return default
        try:
            number = int(value) if integer else float(value)
        except (TypeError, ValueError):
            raise self.error(field, f"must be a{'n integer' if integer else ' number'}") from None
        if number <= 0:
            raise self.error(field, "must be greater than 0")
        return number

    def flag(self, field: str) -> bool:
        value = self.value(field)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        raise self.error(field, "must be true or false")

    def url(self, field: str) -> Secret:
        secret = self.secret(field, required=True)
        assert secret is not None
        parts = _split(secret.reveal())
        # The URL is a credential: describe what is wrong with it without quoting it.
        if parts is None or parts[0] not in ("http", "https") or not parts[1]:
            raise self.error(field, "must be an http(s) URL")
        if parts[0] == "http" and not is_loopback(parts[1]):
            raise self.error(
                field, f"must use https (host {parts[1]}; plain http is allowed only to loopback)"
            )
        return secret

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise AlertConfigError(f"{self.where}: unknown field {unknown[0]!r}")


def _split(url: str) -> tuple[str, str] | None:
    try:
        parts = urlsplit(url)
        if parts.username or parts.password:
            return None
        return parts.scheme.lower(), (parts.hostname or "")
    except ValueError:
        return None


def _slack(name: str, f: _Fields) -> Channel:
    return SlackChannel(name=name, url=f.url("url"), timeout=f.number("timeout", DEFAULT_TIMEOUT))


def _webhook(name: str, f: _Fields) -> Channel:
    url = f.url("url")
    f.used.add("headers")
    raw_headers = f.raw.get("headers") or {}  # a mapping whose values may each be {env: ...}
    if not isinstance(raw_headers, Mapping):
        raise f.error("headers", "must be a mapping of header name to value")
    headers: dict[str, Secret] = {}
    for key, raw in raw_headers.items():
        if not isinstance(key, str) or not _HEADER.match(key):
            raise f.error("headers", f"has an invalid header name {key!r}")
        sub = _Fields(f.where, {key: raw})
        value = sub.secret(key, required=True)
        assert value is not None
        if "\n" in value.reveal() or "\r" in value.reveal():
            raise f.error("headers", f"value of {key!r} contains a line break")
        headers[key] = value
    return WebhookChannel(name=name, url=url, headers=headers, timeout=f.number("timeout", DEFAULT_TIMEOUT))


def _email(name: str, f: _Fields) -> Channel:
    host = f.text("host", required=True)
    assert host is not None
    starttls = f.flag("starttls")
    use_ssl = f.flag("ssl")
    if starttls and use_ssl:
        raise f.error("ssl", "and 'starttls' are exclusive (ssl: implicit TLS, port 465; starttls: port 587)")
    port = int(f.number("port", 465 if use_ssl else 587 if starttls else 25, integer=True))
    sender = f.text("from", required=True)
    assert sender is not None
    if "@" not in sender:
        raise f.error("from", "must be an e-mail address")
    raw_to = f.value("to", required=True)
    to = [raw_to] if isinstance(raw_to, str) else raw_to
    if not isinstance(to, list) or not to or not all(isinstance(a, str) and "@" in a for a in to):
        raise f.error("to", "must be an e-mail address or a non-empty list of them")
    username = f.text("username")
    password = f.secret("password")
    if password and not username:
        raise f.error("username", "is required when a password is set")
    if username and not (starttls or use_ssl) and not is_loopback(host):
        # A password must not cross a network in clear text.
        raise f.error("starttls", f"must be true (or ssl: true) to log in to {host}, which is not loopback")
    return EmailChannel(
        name=name,
        host=host,
        port=port,
        sender=sender,
        to=tuple(a.strip() for a in to),
        starttls=starttls,
        use_ssl=use_ssl,
        username=username,
        password=password,
        timeout=f.number("timeout", DEFAULT_TIMEOUT),
    )


_BUILDERS: dict[str, Callable[[str, _Fields], Channel]] = {
    "slack": _slack,
    "email": _email,
    "webhook": _webhook,
}


def _entries(source: str, channels: Any) -> list[tuple[str, Any]]:
    if isinstance(channels, Mapping):
        return [(str(name), raw) for name, raw in channels.items()]
    if isinstance(channels, list):
        entries = []
        for index, raw in enumerate(channels):
            name = raw.get("name") if isinstance(raw, Mapping) else None
            if not isinstance(name, str) or not name:
                raise AlertConfigError(f"{source}: channels[{index}]: field 'name' is required")
            entries.append((name, raw))
        return entries
    raise AlertConfigError(f"{source}: 'channels' must be a mapping of name to settings, or a list")


def parse_channels(document: Any, source: str = "alerts config") -> list[Channel]:
    """Channels from an already-parsed document (`{"channels": ...}`)."""
    if document is None:
        return []
    if not isinstance(document, Mapping):
        raise AlertConfigError(f"{source}: expected a mapping with a 'channels' key")
    unknown = sorted(set(document) - {"channels"})
    if unknown:
        raise AlertConfigError(f"{source}: unknown top-level key {unknown[0]!r}")
    out: list[Channel] = []
    seen: set[str] = set()
    for name, raw in _entries(source, document.get("channels") or []):
        where = f"{source}: channel {name!r}"
        if not _NAME.match(name):
            raise AlertConfigError(f"{where}: name must be 1-60 letters, digits, '.', '_' or '-'")
        if name in seen:
            raise AlertConfigError(f"{where}: defined twice")
        seen.add(name)
        if not isinstance(raw, Mapping):
            raise AlertConfigError(f"{where}: settings must be a mapping")
        kind = raw.get("type")
        if not kind:
            raise AlertConfigError(f"{where}: field 'type' is required (one of {', '.join(_BUILDERS)})")
        builder = _BUILDERS.get(str(kind))
        if builder is None:
            raise AlertConfigError(
                f"{where}: field 'type' is {kind!r}, expected one of {', '.join(_BUILDERS)}"
            )
        fields = _Fields(where, raw)
        channel = builder(name, fields)
        fields.finish()
        out.append(channel)
    return out


def load_channels(source: str | os.PathLike[str] | Mapping[str, Any]) -> list[Channel]:
    """Channels from a YAML file path or an already-parsed mapping."""
    if isinstance(source, Mapping):
        return parse_channels(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AlertConfigError(f"alerts config {path}: cannot read ({exc.strerror or exc})") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # Not str(exc): it quotes the offending line, which may hold an inline secret.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise AlertConfigError(f"alerts config {path}: not valid YAML{where}: {problem}") from None
    return parse_channels(document, source=f"alerts config {path}")


def channels_from_env() -> list[Channel]:
    """The channels of `ESM_ALERTS_FILE`; none when it is unset (alerts are then only logged)."""
    path = os.environ.get(ENV_FILE)
    return load_channels(path) if path else []
