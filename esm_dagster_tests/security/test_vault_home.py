"""Where the vault finds its keys: the variables first, then `$ESM_HOME/fernet.keys`."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from esm_dagster.security.vault import Vault, VaultError, VaultNotConfigured, load_keys


def _key() -> str:
    return Fernet.generate_key().decode()


def test_home_key_file_is_the_fallback(tmp_path: Path) -> None:
    key = _key()
    (tmp_path / "fernet.keys").write_text(key + "\n")
    assert load_keys({"ESM_HOME": str(tmp_path)}) == [key]
    stored = Vault([key]).encrypt({"api_key": "k"})
    assert Vault.from_env({"ESM_HOME": str(tmp_path)}).decrypt(stored)["api_key"].reveal() == "k"


def test_default_home_is_dot_esm_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = _key()
    (tmp_path / ".esm").mkdir()
    (tmp_path / ".esm" / "fernet.keys").write_text(key + "\n")
    monkeypatch.chdir(tmp_path)
    assert load_keys({}) == [key]


def test_variables_come_before_the_home_file(tmp_path: Path) -> None:
    home_key, env_key, file_key = _key(), _key(), _key()
    (tmp_path / "fernet.keys").write_text(home_key)
    (tmp_path / "other.keys").write_text(file_key)
    env = {"ESM_HOME": str(tmp_path)}
    assert load_keys(
        {**env, "ESM_FERNET_KEYS": env_key, "ESM_FERNET_KEYS_FILE": str(tmp_path / "other.keys")}
    ) == [env_key]
    assert load_keys({**env, "ESM_FERNET_KEYS_FILE": str(tmp_path / "other.keys")}) == [file_key]


@pytest.mark.parametrize("setup", ["nothing", "empty home file", "missing named file", "empty variable"])
def test_no_key_configured_is_its_own_error(tmp_path: Path, setup: str) -> None:
    env = {"ESM_HOME": str(tmp_path)}
    if setup == "empty home file":
        (tmp_path / "fernet.keys").write_text("\n")
    elif setup == "missing named file":
        env["ESM_FERNET_KEYS_FILE"] = str(tmp_path / "gone.keys")
    elif setup == "empty variable":
        env["ESM_FERNET_KEYS"] = " , "
    with pytest.raises(VaultNotConfigured) as info:
        Vault.from_env(env)
    assert isinstance(info.value, VaultError)
    message = str(info.value)
    assert "ESM_FERNET_KEYS" in message
    if setup == "nothing":
        assert "esm keys generate" in message and str(tmp_path / "fernet.keys") in message


def test_a_wrong_key_is_not_a_missing_configuration() -> None:
    stored = Vault([_key()]).encrypt({"api_key": "k"})
    with pytest.raises(VaultError) as info:
        Vault([_key()]).decrypt(stored, mapping="'Stripe'")
    assert not isinstance(info.value, VaultNotConfigured)
    with pytest.raises(VaultError) as bad:
        Vault(["not-a-key"])
    assert not isinstance(bad.value, VaultNotConfigured)
