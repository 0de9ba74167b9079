"""Alerts for data engineers: a run failed, a mapping went into error (or recovered).

Sensors build an `Alert` and hand it to `AlertDispatcher.send`; the channels (Slack, e-mail,
generic webhook) come from the YAML file named by `ESM_ALERTS_FILE`. Each alert reaches each
channel once, however often it is raised, and carries no secret.
"""

from esm_dagster.alerts.channels import (
    Channel,
    DeliveryError,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
)
from esm_dagster.alerts.config import AlertConfigError, channels_from_env, load_channels, parse_channels
from esm_dagster.alerts.dispatch import AlertDispatcher, DeliveryResult, DeliveryStatus
from esm_dagster.alerts.message import Alert, run_url, ui_url

__all__ = [
    "Alert",
    "AlertConfigError",
    "AlertDispatcher",
    "Channel",
    "DeliveryError",
    "DeliveryResult",
    "DeliveryStatus",
    "EmailChannel",
    "SlackChannel",
    "WebhookChannel",
    "channels_from_env",
    "load_channels",
    "parse_channels",
    "run_url",
    "ui_url",
]
