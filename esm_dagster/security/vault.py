"""The credentials vault: Fernet through MultiFernet, keys from the environment.

The `credentials` column holds `{"fernet": "<token>"}` and nothing else. Keys come from
`ESM_FERNET_KEYS` (comma separated, newest first) or from the file named by
`ESM_FERNET_KEYS_FILE`; MultiFernet encrypts with the first and decrypts with any, so a new key
can be put in front while old ciphertexts still open. Decryption returns `Secret` values so the
clear text cannot reach a log by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from esm_dagster.security.secret import Secret

KEYS_ENV = "ESM_FERNET_KEYS"
KEYS_FILE_ENV = "ESM_FERNET_KEYS_FILE"
CIPHERTEXT_FIELD = "fernet"


class VaultError(RuntimeError):
    """Raised when credentials cannot be encrypted or opened; never carries key or clear text."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _split_keys(raw: str) -> list[str]:
    return [k.strip() for k in raw.replace("\n", ",").split(",") if k.strip()]


def load_keys(environ: Mapping[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    raw = env.get(KEYS_ENV, "")
    if not raw and env.get(KEYS_FILE_ENV):
        path = Path(env[KEYS_FILE_ENV])
        if not path.exists():
            raise VaultError(f"{KEYS_FILE_ENV} names {path}, which does not exist")
        raw = path.read_text()
    keys = _split_keys(raw)
    if not keys:
        raise VaultError(
            f"no Fernet key: set {KEYS_ENV} (comma separated, newest first) or {KEYS_FILE_ENV}; "
            "`esm keys generate` prints a new key"
        )
    return keys


class Vault:
    def __init__(self, keys: list[str]) -> None:
        fernets = []
        for position, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.encode()))
            except (ValueError, TypeError):
                # Say which key is bad without printing it.
                raise VaultError(
                    f"{KEYS_ENV} key #{position + 1} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes)"
                ) from None
        if not fernets:
            raise VaultError("a vault needs at least one key")
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Vault:
        return cls(load_keys(environ))

    def __repr__(self) -> str:
        return "Vault(keys=***)"

    def encrypt(self, credentials: Mapping[str, Any]) -> dict[str, str]:
        plain = {k: v.reveal() if isinstance(v, Secret) else v for k, v in credentials.items()}
        token = self._fernet.encrypt(json.dumps(plain, sort_keys=True).encode())
        return {CIPHERTEXT_FIELD: token.decode()}

    def decrypt(self, stored: Mapping[str, Any] | None, *, mapping: str = "?") -> dict[str, Secret]:
        token = (stored or {}).get(CIPHERTEXT_FIELD)
        if not token:
            if stored:
                raise VaultError(
                    f"mapping {mapping}: credentials are not Fernet ciphertext (refusing clear text)"
                )
            return {}
        try:
            plain = json.loads(self._fernet.decrypt(str(token).encode()))
        except InvalidToken:
            raise VaultError(
                f"mapping {mapping}: credentials cannot be decrypted with any key in {KEYS_ENV}"
            ) from None
        return {str(k): Secret(str(v)) for k, v in plain.items()}

    def rotate(self, stored: Mapping[str, Any]) -> dict[str, str]:
        """Re-encrypt under the newest key."""
        token = stored.get(CIPHERTEXT_FIELD)
        if not token:
            raise VaultError("nothing to rotate: no ciphertext")
        try:
            return {CIPHERTEXT_FIELD: self._fernet.rotate(str(token).encode()).decode()}
        except InvalidToken:
            raise VaultError(f"credentials cannot be decrypted with any key in {KEYS_ENV}") from None


def is_ciphertext(stored: Any) -> bool:
    return isinstance(stored, Mapping) and set(stored) == {CIPHERTEXT_FIELD}
