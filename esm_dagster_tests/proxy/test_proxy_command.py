"""`python -m esm_dagster.proxy`: the password-file line it prints works; a non-loopback upstream is refused."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from esm_dagster.proxy.__main__ import is_loopback_http, main
from esm_dagster.proxy.passwords import load_password_file
from esm_dagster.security.secret import Secret


def test_hash_password_prints_a_line_the_proxy_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a-long-enough-password\n"))
    assert main(["hash-password", "Ana@Club.example"]) == 0
    line = capsys.readouterr().out
    assert "a-long-enough-password" not in line
    (tmp_path / "passwords").write_text(line, encoding="utf-8")
    entry = load_password_file(tmp_path / "passwords")["ana@club.example"]
    assert entry.matches(Secret("a-long-enough-password"))


def test_short_passwords_and_non_loopback_upstreams_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    with pytest.raises(SystemExit):
        main(["hash-password", "ana@club.example"])
    assert "at least 12" in capsys.readouterr().err
    for upstream in ("http://10.0.0.1:3000", "http://127.0.0.1.example.com:3000", "https://127.0.0.1:3000"):
        with pytest.raises(SystemExit):
            main(["serve", "--upstream", upstream, "--password-file", str(tmp_path / "p")])
        assert "must be on loopback" in capsys.readouterr().err
    assert is_loopback_http("http://127.0.0.1:3000") and is_loopback_http("http://[::1]:3000")
