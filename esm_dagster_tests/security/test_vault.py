import json

import pytest
from cryptography.fernet import Fernet

from esm_dagster.security.secret import Secret
from esm_dagster.security.vault import Vault, VaultError, is_ciphertext, load_keys


def test_round_trip_returns_secrets_and_stores_only_ciphertext() -> None:
    vault = Vault([Fernet.generate_key().decode()])
    stored = vault.encrypt({"api_key": "sk_test_abcdef123456"})
    assert is_ciphertext(stored)
    assert "sk_test_abcdef123456" not in json.dumps(stored)
    opened = vault.decrypt(stored, mapping="'Stripe'")
    assert isinstance(opened["api_key"], Secret)
    assert opened["api_key"].reveal() == "sk_test_abcdef123456"
    assert "sk_test" not in repr(opened) and "sk_test" not in str(opened["api_key"])


def test_newest_key_first_old_keys_still_open() -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    stored_old = Vault([old]).encrypt({"api_key": "k1-secret"})
    rotated_vault = Vault([new, old])
    assert rotated_vault.decrypt(stored_old)["api_key"].reveal() == "k1-secret"
    rotated = rotated_vault.rotate(stored_old)
    # After rotation the new key alone opens it.
    assert Vault([new]).decrypt(rotated)["api_key"].reveal() == "k1-secret"


def test_wrong_key_names_mapping_without_leaking() -> None:
    stored = Vault([Fernet.generate_key().decode()]).encrypt({"api_key": "sk_test_leakcheck99"})
    other_key = Fernet.generate_key().decode()
    with pytest.raises(VaultError) as info:
        Vault([other_key]).decrypt(stored, mapping="'Stripe'")
    message = str(info.value)
    assert "'Stripe'" in message and "ESM_FERNET_KEYS" in message
    assert other_key not in message and "leakcheck" not in message


def test_clear_text_credentials_are_refused() -> None:
    vault = Vault([Fernet.generate_key().decode()])
    with pytest.raises(VaultError, match="not Fernet ciphertext"):
        vault.decrypt({"api_key": "sk_test_plain"})


def test_keys_from_env_list_and_file(tmp_path) -> None:
    a, b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    assert load_keys({"ESM_FERNET_KEYS": f" {a}, {b} "}) == [a, b]
    key_file = tmp_path / "keys"
    key_file.write_text(f"{b}\n{a}\n")
    assert load_keys({"ESM_FERNET_KEYS_FILE": str(key_file)}) == [b, a]
    with pytest.raises(VaultError, match="esm keys generate"):
        load_keys({"ESM_HOME": str(tmp_path / "no_keys_here")})


def test_invalid_key_is_named_by_position_not_value() -> None:
    with pytest.raises(VaultError) as info:
        Vault([Fernet.generate_key().decode(), "not-a-real-key"])
    assert "#2" in str(info.value) and "not-a-real-key" not in str(info.value)


def test_secret_never_prints() -> None:
    secret = Secret("sk_live_supersecret")
    assert str(secret) == "***" and repr(secret) == "Secret(***)" and f"{secret}" == "***"
    assert "supersecret" not in str({"k": secret}) and "supersecret" not in str([secret])
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(secret)
