from esm_dagster.security.redact import redact_text


def test_query_string_keys_and_bearer_tokens_are_masked() -> None:
    text = (
        "GET http://127.0.0.1:1/v1/x?limit=10&api_key=abc123secret&token=tok999 failed; "
        "Authorization: Bearer sk_test_4eC39HqLyjWDarjtT1zdp7dc"
    )
    out = redact_text(text)
    for secret in ("abc123secret", "tok999", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"):
        assert secret not in out
    assert "limit=10" in out


def test_known_values_are_masked_wherever_they_appear() -> None:
    assert (
        redact_text("the key hunter2-long was rejected", extra=["hunter2-long"]) == "the key *** was rejected"
    )


def test_url_passwords_are_masked() -> None:
    assert "pw123" not in redact_text("postgresql://user:pw123@db/x")
