"""The password file: scrypt lines, checked in constant time, bad lines named."""

from __future__ import annotations

from pathlib import Path

import pytest

from esm_dagster.proxy.passwords import PasswordFileError, hash_password, load_password_file, parse_hash
from esm_dagster.security.secret import Secret

PASSWORD = "correct horse battery staple"
FAST = {"n": 2**10}  # the default cost is for production; the format is the same


def test_a_hash_matches_its_password_only(tmp_path: Path) -> None:
    line = hash_password(Secret(PASSWORD), **FAST)
    assert PASSWORD not in line and line.startswith("scrypt$1024$8$1$")
    path = tmp_path / "passwords"
    path.write_text(f"# the data team\n\nAna@Club.example:{line}\n", encoding="utf-8")
    table = load_password_file(path)
    assert set(table) == {"ana@club.example"}
    assert table["ana@club.example"].matches(Secret(PASSWORD))
    assert not table["ana@club.example"].matches(Secret(PASSWORD + " "))
    assert hash_password(Secret(PASSWORD), **FAST) != line  # salted


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("ana@club.example", "expected `email:scrypt"),
        ("ana@club.example:bcrypt$2b$12$abc", "not a scrypt"),
        ("ana@club.example:scrypt$1000$8$1$c2FsdHNhbHQ=$ZGlnZXN0ZGlnZXN0ZGlnZXN0", "cost parameters"),
        ("ana@club.example:scrypt$1024$8$1$!!$ZGlnZXN0", "bad number or base64"),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "passwords"
    path.write_text(f"# header\n{line}\n", encoding="utf-8")
    with pytest.raises(PasswordFileError, match=message) as caught:
        load_password_file(path)
    assert f"{path}:2" in str(caught.value)


def test_parse_round_trips() -> None:
    line = hash_password(Secret(PASSWORD), **FAST)
    assert parse_hash(line).encode() == line
