"""The credentials vault: Fernet through MultiFernet, keys from the environment.

The `credentials` column holds `{"fernet": "<token>"}` and nothing else. Keys come from, in this
order: `ESM_FERNET_KEYS` (comma separated, newest first), the file named by
`ESM_FERNET_KEYS_FILE`, else `$ESM_HOME/fernet.keys` (the file `esm demo` creates) when it exists.
MultiFernet encrypts with the first and decrypts with any, so a new key can be put in front while
old ciphertexts still open. Decryption returns `Secret` values so the clear text cannot reach a
log by accident.

No key at all is `VaultNotConfigured`: a problem of the machine running `esm`, not of a mapping,
so the sync engine must not count it against the mapping. A key that does not open the stored
ciphertext is a plain `VaultError` (the mapping's credentials need attention).
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


class VaultNotConfigured(VaultError):
    """No Fernet key is configured where `esm` runs: a local setup error, not the mapping's fault."""


HOME_KEYS_FILE = "fernet.keys"


def home_keys_file(environ: Mapping[str, str]) -> Path:
    """`$ESM_HOME/fernet.keys`, with ESM_HOME resolved as the catalog resolves it (default `.esm`)."""
    from esm_dagster.catalog.db import DEFAULT_HOME

    return Path(environ.get("ESM_HOME") or DEFAULT_HOME).resolve() / HOME_KEYS_FILE


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _split_keys(raw: str) -> list[str]:
    return [k.strip() for k in raw.replace("\n", ",").split(",") if k.strip()]


def load_keys(environ: Mapping[str, str] | None = None) -> list[str]:
    """The keys, newest first: `ESM_FERNET_KEYS`, else `ESM_FERNET_KEYS_FILE`, else `$ESM_HOME/fernet.keys`."""
    return keys_and_source(environ)[0]


def keys_and_source(environ: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """`load_keys` and where the keys came from (the variable's name or the file's path)."""
    env = os.environ if environ is None else environ
    raw = env.get(KEYS_ENV, "")
    source = KEYS_ENV
    if not raw and env.get(KEYS_FILE_ENV):
        path = Path(env[KEYS_FILE_ENV])
        if not path.exists():
            raise VaultNotConfigured(f"{KEYS_FILE_ENV} names {path}, which does not exist")
        raw, source = path.read_text(), str(path)
    elif not raw:
        home_file = home_keys_file(env)
        if home_file.is_file():
            raw, source = home_file.read_text(), str(home_file)
        else:
            raise VaultNotConfigured(
                f"no Fernet key: set {KEYS_ENV} (comma separated, newest first) or {KEYS_FILE_ENV}, "
                f"or put the key in {home_file}; `esm keys generate` prints a new key"
            )
    keys = _split_keys(raw)
    if not keys:
        raise VaultNotConfigured(
            f"no Fernet key: {source} holds none; put a key there or set {KEYS_ENV}; "
            "`esm keys generate` prints a new key"
        )
    return keys, source


class Vault:
    def __init__(self, keys: list[str], source: str = KEYS_ENV) -> None:
        self.source = source  # named in "cannot be decrypted" errors: where to look for the key
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
        self._newest = fernets[0]
        self._fernet = MultiFernet(fernets)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Vault:
        keys, source = keys_and_source(environ)
        return cls(keys, source)

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
                f"mapping {mapping}: credentials cannot be decrypted with any key in {self.source}"
            ) from None
        return {str(k): Secret(str(v)) for k, v in plain.items()}

    def is_current(self, stored: Mapping[str, Any] | None) -> bool:
        """True when the newest key alone opens `stored`: rotation has nothing to do for it."""
        token = (stored or {}).get(CIPHERTEXT_FIELD)
        if not token:
            return False
        try:
            self._newest.decrypt(str(token).encode())
        except InvalidToken:
            return False
        return True

    def rotate(self, stored: Mapping[str, Any]) -> dict[str, str]:
        """Re-encrypt under the newest key."""
        token = stored.get(CIPHERTEXT_FIELD)
        if not token:
            raise VaultError("nothing to rotate: no ciphertext")
        try:
            return {CIPHERTEXT_FIELD: self._fernet.rotate(str(token).encode()).decode()}
        except InvalidToken:
            raise VaultError(f"credentials cannot be decrypted with any key in {self.source}") from None


def is_ciphertext(stored: Any) -> bool:
    return isinstance(stored, Mapping) and set(stored) == {CIPHERTEXT_FIELD}
