"""Outbound messages (email, SMS, chat): a durable queue and a dispatcher that falls back by priority."""

from esm_dagster.sync.messages.dispatch import Dispatcher, DispatchReport, dispatch
from esm_dagster.sync.messages.queue import enqueue

__all__ = ["DispatchReport", "Dispatcher", "dispatch", "enqueue"]
