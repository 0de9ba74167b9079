import re

import pytest

from esm_dagster.security.endpoints import EndpointRefused, check_endpoint


@pytest.mark.parametrize(
    "url", ["https://api.stripe.com", "http://127.0.0.1:12111", "http://localhost:8/", "http://[::1]:9"]
)
def test_allowed(url: str) -> None:
    assert check_endpoint(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://api.stripe.com", "must use https"),
        ("ftp://x.example", "not an http(s) URL"),
        ("https://user:pw@api.example", "must not carry credentials"),
    ],
)
def test_refused(url: str, needle: str) -> None:
    with pytest.raises(EndpointRefused, match=re.escape(needle)) as info:
        check_endpoint(url, mapping="'Stripe'")
    assert "'Stripe'" in str(info.value)
    assert "pw" not in str(info.value).replace("https", "")
