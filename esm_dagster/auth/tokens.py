"""The token state a credential carries between runs: what the token endpoint last handed out.

It lives in the mapping's encrypted `credentials` next to the long-lived secrets, under the field
names the factory already treats as issued tokens (`access_token`, `expires_at`, `refresh_token`),
so a refreshed token never moves the mapping to another rate-limit bucket.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from esm_dagster.security.secret import Secret

# Renew this long before `expires_at`: a token that expires between the check and the request
# would cost a 401 and a second round trip.
EXPIRY_MARGIN_SECONDS = 60.0

TOKEN_FIELDS = ("access_token", "expires_at", "refresh_token", "instance_url")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value.reveal() if isinstance(value, Secret) else str(value)
    return text or None


@dataclass(frozen=True, slots=True)
class TokenState:
    access_token: Secret
    expires_at: float | None = None  # unix seconds; None when the provider does not say (Salesforce)
    refresh_token: Secret | None = None
    instance_url: str | None = None  # Salesforce: the org's API host, from the token answer

    @classmethod
    def from_credentials(cls, credentials: Mapping[str, Any]) -> TokenState | None:
        """The stored state, or None when no access token was issued yet."""
        access = _text(credentials.get("access_token"))
        if access is None:
            return None
        expires = _text(credentials.get("expires_at"))
        try:
            expires_at = float(expires) if expires is not None else None
        except ValueError:
            expires_at = 0.0  # unreadable: treat as expired, a refresh rewrites it
        refresh = _text(credentials.get("refresh_token"))
        return cls(
            access_token=Secret(access),
            expires_at=expires_at,
            refresh_token=Secret(refresh) if refresh else None,
            instance_url=_text(credentials.get("instance_url")),
        )

    def fields(self) -> dict[str, Any]:
        """The credential fields to write back (a missing refresh token keeps the stored one)."""
        out: dict[str, Any] = {"access_token": self.access_token}
        out["expires_at"] = "" if self.expires_at is None else str(int(self.expires_at))
        if self.refresh_token is not None:
            out["refresh_token"] = self.refresh_token
        if self.instance_url:
            out["instance_url"] = self.instance_url
        return out

    def usable(self, now: float | None = None, margin: float = EXPIRY_MARGIN_SECONDS) -> bool:
        """Not expired, nor about to be: a token without an expiry is good until refused."""
        if self.expires_at is None:
            return True
        return (now if now is not None else time.time()) < self.expires_at - margin

    def __repr__(self) -> str:
        return f"TokenState(access_token=***, expires_at={self.expires_at!r})"
