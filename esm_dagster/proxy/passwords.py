"""The proxy's password file: one `email:scrypt$n$r$p$salt$hash` line per operator.

scrypt (stdlib `hashlib.scrypt`) rather than bcrypt: no extra dependency, memory-hard, and the
cost parameters travel in each line so they can be raised without invalidating old entries.
The file says who knows which password; what they may do is their role in the catalog's `user`
table, so demoting someone there takes effect without touching this file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from esm_dagster.security.secret import Secret

SCHEME = "scrypt"
# n=2**14, r=8, p=1: ~16 MiB and tens of milliseconds per check; the proxy caches successes.
DEFAULT_N, DEFAULT_R, DEFAULT_P = 2**14, 8, 1
_MAX_N = 2**20


class PasswordFileError(ValueError):
    """A line of the password file cannot be read; the message names the file, line and email."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def matches(self, password: Secret) -> bool:
        candidate = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(candidate, self.digest)

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        return f"{SCHEME}${self.n}${self.r}${self.p}${salt}${digest}"


def _scrypt(password: Secret, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.reveal().encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length, maxmem=2**26 + 128 * r * n
    )


def hash_password(password: Secret, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    salt = os.urandom(16)
    return PasswordHash(n, r, p, salt, _scrypt(password, salt, n, r, p, 32)).encode()


def parse_hash(text: str) -> PasswordHash:
    parts = text.strip().split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError(f"not a {SCHEME}$n$r$p$salt$hash value")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError as exc:
        raise ValueError(f"bad number or base64 in the hash ({exc})") from None
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"cost parameters out of range (n={n}, r={r}, p={p})")
    if len(salt) < 8 or len(digest) < 16:
        raise ValueError("salt or digest too short")
    return PasswordHash(n, r, p, salt, digest)


def load_password_file(path: Path) -> dict[str, PasswordHash]:
    """email (lower case) -> hash. Blank lines and `#` comments are skipped; a bad line is an error
    naming it, so a typo cannot silently lock someone out or leave a stale entry in force."""
    entries: dict[str, PasswordHash] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        email, sep, value = line.partition(":")
        email = email.strip().lower()
        if not sep or "@" not in email:
            raise PasswordFileError(f"{path}:{number}: expected `email:{SCHEME}$...`")
        try:
            entries[email] = parse_hash(value)
        except ValueError as exc:
            raise PasswordFileError(f"{path}:{number} ({email}): {exc}") from None
    return entries
