"""Where alerts go: a Slack incoming webhook, an SMTP mailbox, or any JSON webhook.

Each channel does one thing, put an already-redacted `Alert` on the wire, and raises
`DeliveryError` (or the transport's own error) when that did not happen. Deduplication, retries
and bookkeeping are the dispatcher's, so a channel stays small enough to read in one sitting.

Secrets (webhook URLs, which are bearer credentials in their own right; SMTP passwords; header
values) are held as `Secret` and revealed only in the call that sends them. `secrets()` lists
every form in which they could show up in an error message, for the dispatcher to scrub.
"""

from __future__ import annotations

import abc
import dataclasses
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from esm_dagster import __version__
from esm_dagster.alerts.message import Alert, _one_line
from esm_dagster.security import log_filter
from esm_dagster.security.secret import Secret

DEFAULT_TIMEOUT = 5.0
USER_AGENT = f"esm-dagster/{__version__}"

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
_SLACK_HEADER_MAX = 150
_SLACK_FIELD_MAX = 2000
_SLACK_TEXT_MAX = 3000
_SLACK_FIELDS_MAX = 10

log_filter.install()


class DeliveryError(Exception):
    """The receiver did not accept the alert; the message names the channel, never its URL."""


def url_secret_forms(url: str) -> list[str]:
    """Every substring of a secret URL that an error message might quote.

    A Slack webhook URL *is* the credential (its path holds the token), and transports quote URLs
    in pieces: whole, without the scheme, as a path, as a query. Long path segments are added on
    their own because they are the token.
    """
    parts = urlsplit(url)
    forms = [url, url.split("://", 1)[-1], parts.path, parts.query]
    if parts.query:
        forms.append(f"{parts.path}?{parts.query}")
    forms += [segment for segment in parts.path.split("/") if len(segment) >= 16]
    return [form for form in forms if form and form != "/"]


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    # Slack mrkdwn: only these three are control characters, and they must be escaped.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _post_json(channel: str, url: Secret, payload: Any, headers: Mapping[str, str], timeout: float) -> None:
    # httpx logs every URL it posts to, and a webhook URL is the credential: mask it there.
    log_filter.register([url])
    try:
        # No redirects: a 30x would carry the alert (and any auth header) somewhere we did not choose.
        response = httpx.post(
            url.reveal(),
            json=payload,
            headers={"User-Agent": USER_AGENT, **headers},
            timeout=timeout,
            follow_redirects=False,
        )
    finally:
        log_filter.release([url])
    if not 200 <= response.status_code < 300:
        detail = _one_line(response.text)[:200]
        raise DeliveryError(
            f"channel {channel!r}: HTTP {response.status_code} from {response.url.host}"
            + (f": {detail}" if detail else "")
        )


class Channel(abc.ABC):
    """One configured destination. Subclasses are frozen dataclasses, so reprs mask secrets."""

    type: ClassVar[str]
    name: str

    @abc.abstractmethod
    def deliver(self, alert: Alert) -> str | None:
        """Send the alert; return an optional note (e.g. partial acceptance); raise on failure."""

    @abc.abstractmethod
    def secrets(self) -> list[str]:
        """Clear-text forms of this channel's secrets, for redaction of errors and logs."""


@dataclasses.dataclass(frozen=True, repr=True)
class SlackChannel(Channel):
    """A Slack incoming webhook: `{"text": ..., "blocks": [...]}`; `text` is the notification fallback."""

    type: ClassVar[str] = "slack"
    name: str
    url: Secret
    timeout: float = DEFAULT_TIMEOUT

    def payload(self, alert: Alert) -> dict[str, Any]:
        facts = [(label, value) for label, value in alert.facts() if label != "Run"]
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _truncate(alert.subject, _SLACK_HEADER_MAX)},
            }
        ]
        if facts:
            blocks.append(
                {
                    "type": "section",
                    "fields": [
                        {
                            "type": "mrkdwn",
                            "text": _truncate(f"*{label}*\n{_slack_escape(value)}", _SLACK_FIELD_MAX),
                        }
                        for label, value in facts[:_SLACK_FIELDS_MAX]
                    ],
                }
            )
        message = _slack_escape(alert.message.strip() or "(no message)")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "```" + _truncate(message, _SLACK_TEXT_MAX - 6) + "```"},
            }
        )
        if alert.run_url:
            link = _slack_escape(alert.run_url).replace("|", "%7C")
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open the run>"}})
        text = alert.subject + (f"\n{alert.run_url}" if alert.run_url else "")
        return {"text": _slack_escape(text), "blocks": blocks}

    def deliver(self, alert: Alert) -> str | None:
        _post_json(self.name, self.url, self.payload(alert), {}, self.timeout)
        return None

    def secrets(self) -> list[str]:
        return url_secret_forms(self.url.reveal())


@dataclasses.dataclass(frozen=True, repr=True)
class WebhookChannel(Channel):
    """Any JSON endpoint: the alert's fields plus rendered subject and body.

    `Idempotency-Key` carries the dedup key, so a receiver that sees a retry after a lost
    response can drop it.
    """

    type: ClassVar[str] = "webhook"
    name: str
    url: Secret
    headers: Mapping[str, Secret] = dataclasses.field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT

    def payload(self, alert: Alert) -> dict[str, Any]:
        return alert.to_dict()

    def deliver(self, alert: Alert) -> str | None:
        headers = {key: value.reveal() for key, value in self.headers.items()}
        headers.setdefault("Idempotency-Key", _one_line(alert.dedup_key))
        _post_json(self.name, self.url, self.payload(alert), headers, self.timeout)
        return None

    def secrets(self) -> list[str]:
        return url_secret_forms(self.url.reveal()) + [value.reveal() for value in self.headers.values()]


@dataclasses.dataclass(frozen=True, repr=True)
class EmailChannel(Channel):
    """Plain-text mail over SMTP, with optional STARTTLS or implicit TLS and login.

    TLS contexts are created explicitly: smtplib's default for `starttls()` and `SMTP_SSL`
    does not verify the server certificate.
    """

    type: ClassVar[str] = "email"
    name: str
    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = False
    use_ssl: bool = False
    username: str | None = None
    password: Secret | None = None
    timeout: float = DEFAULT_TIMEOUT

    def message(self, alert: Alert) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = alert.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Message-ID"] = make_msgid(domain="esm-dagster")
        msg["X-ESM-Dedup-Key"] = _one_line(alert.dedup_key)
        msg["X-ESM-Severity"] = alert.severity
        msg.set_content(alert.body)
        return msg

    def deliver(self, alert: Alert) -> str | None:
        msg = self.message(alert)
        smtp: smtplib.SMTP
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.starttls and not self.use_ssl:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password.reveal() if self.password else "")
            refused = smtp.send_message(msg)
        if refused:
            # Some recipients took it: a retry would send them a duplicate, so this counts as sent.
            return f"channel {self.name!r}: recipients refused: {', '.join(sorted(refused))}"
        return None

    def secrets(self) -> list[str]:
        return [self.password.reveal()] if self.password else []
