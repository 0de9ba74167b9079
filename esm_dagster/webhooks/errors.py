"""Why a webhook was refused, as the HTTP status the provider sees and a reason a person can act on.

The reason goes into the response body and the log, so it names the header, the mapping and the
rule that failed, and never a secret, a signature or a body.
"""

from __future__ import annotations


class WebhookRejected(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def missing(header: str) -> WebhookRejected:
    return WebhookRejected(401, f"missing {header} header")


def bad_signature(scheme: str) -> WebhookRejected:
    return WebhookRejected(401, f"{scheme} signature does not match the body")


def malformed(header: str, why: str) -> WebhookRejected:
    return WebhookRejected(400, f"{header} header is malformed: {why}")


def stale(header: str, age_seconds: float, tolerance: int) -> WebhookRejected:
    return WebhookRejected(
        401, f"{header} is {int(age_seconds)} s from now; the window is {tolerance} s (stale or replayed)"
    )
