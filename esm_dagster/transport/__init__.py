"""The HTTP policy every provider call goes through: retries with jittered backoff that honour
the provider's Retry-After, and the metrics (calls, retries, rate-limit waits, latency) behind the
run metadata. Providers classify failures; this package decides what to do about them.
"""

from esm_dagster.transport.metrics import TransportMetrics
from esm_dagster.transport.policy import TransportPolicy

__all__ = ["TransportMetrics", "TransportPolicy"]
