import logging
import re

import pytest

from esm_dagster.security.audit_hook import AUDIT_LOGGER
from esm_dagster.security.endpoints import EndpointPolicy, EndpointRefused, check_endpoint


def _answers(table: dict[str, list[str]]):
    """A resolver answering from `table`: the test's DNS, so no lookup leaves the machine."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return resolve


SANDBOX = {"ESM_ALLOW_LOOPBACK": "1"}


@pytest.mark.parametrize(
    "url", ["https://api.stripe.com", "http://127.0.0.1:12111", "http://localhost:8/", "http://[::1]:9"]
)
def test_sandbox_mode_allows_loopback_emulators(url: str) -> None:
    assert EndpointPolicy.from_env(SANDBOX).check_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:12111", "https://127.0.0.1", "http://localhost:8/", "https://[::1]:9"]
)
def test_without_sandbox_mode_loopback_is_refused(url: str) -> None:
    with pytest.raises(EndpointRefused, match=r"ESM_ALLOW_LOOPBACK|must use https") as info:
        EndpointPolicy.from_env({}, mapping="'Stripe'").check_url(url)
    assert "'Stripe'" in str(info.value)


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://api.stripe.com", "must use https"),
        ("ftp://x.example", "not an http(s) URL"),
        ("https://user:pw@api.example", "must not carry credentials"),
        ("https://10.0.0.1", "10.0.0.1 refused: private address"),
        ("https://192.168.1.20:8443", "private address"),
        ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
        ("https://[fd00:ec2::254]", "cloud metadata"),
        ("https://[::ffff:10.0.0.1]", "private address"),
        ("https://0.0.0.0", "unspecified"),
        ("https://224.0.0.1", "multicast"),
        ("https://100.64.0.7", "shared (CGNAT)"),
        ("https://240.0.0.1", "reserved"),
    ],
)
def test_refused_forms_and_literal_addresses(url: str, needle: str) -> None:
    with pytest.raises(EndpointRefused, match=re.escape(needle)) as info:
        EndpointPolicy.from_env(SANDBOX, mapping="'Stripe'").check_url(url)
    assert "'Stripe'" in str(info.value)
    assert "pw" not in str(info.value).replace("https", "")


def test_plain_http_refusal_names_the_endpoint_with_its_port() -> None:
    """`http://127.1:12111` was reported as `http://127.1`: not the value the user wrote."""
    with pytest.raises(EndpointRefused, match=re.escape("api_endpoint http://127.1:12111 must use https")):
        EndpointPolicy.from_env({}, mapping="'Stripe'").check_url("http://127.1:12111/v1")


def test_check_endpoint_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ESM_ALLOW_LOOPBACK")
    with pytest.raises(EndpointRefused):
        check_endpoint("http://127.0.0.1:1")
    monkeypatch.setenv("ESM_ALLOW_LOOPBACK", "1")
    assert check_endpoint("http://127.0.0.1:1/") == "http://127.0.0.1:1"


def test_names_are_resolved_and_every_address_checked() -> None:
    dns = _answers(
        {
            "api.example.com": ["93.184.216.34"],
            "intranet.example.com": ["10.1.2.3"],
            "split.example.com": ["93.184.216.34", "192.168.0.9"],
            "meta.example.com": ["169.254.169.254"],
            "emulator.test": ["127.0.0.1"],
        }
    )
    policy = EndpointPolicy.from_env({}, mapping="'CRM'", resolver=dns)
    assert policy.check_connect("api.example.com", 443) == ["93.184.216.34"]
    for host, needle in [
        ("intranet.example.com", "intranet.example.com (10.1.2.3) refused: private address"),
        ("split.example.com", "192.168.0.9"),  # one bad answer is enough
        ("meta.example.com", "cloud metadata"),
        ("emulator.test", "loopback address; set ESM_ALLOW_LOOPBACK=1"),
        ("nowhere.example.com", "does not resolve"),
    ]:
        with pytest.raises(EndpointRefused, match=re.escape(needle)):
            policy.check_connect(host, 443)
    assert EndpointPolicy.from_env(SANDBOX, resolver=dns).check_connect("emulator.test", 80) == ["127.0.0.1"]


def test_allowlists_per_mapping_and_global_but_never_metadata() -> None:
    dns = _answers({"erp.lan": ["10.1.2.3"], "files.lan": ["172.16.5.5"], "meta.lan": ["169.254.169.254"]})
    own = EndpointPolicy.from_env({}, allowed_hosts=["ERP.lan", "172.16.0.0/12", "meta.lan"], resolver=dns)
    assert own.check_connect("erp.lan", 443) == ["10.1.2.3"]
    assert own.check_connect("files.lan", 443) == ["172.16.5.5"]  # by network
    with pytest.raises(EndpointRefused):  # the name is allowlisted, not the address behind it
        own.check_url("https://10.1.2.3")
    with pytest.raises(EndpointRefused, match="cloud metadata"):
        own.check_connect("meta.lan", 443)
    everywhere = EndpointPolicy.from_env({"ESM_ALLOWED_HOSTS": "erp.lan, 10.9.0.0/16"}, resolver=dns)
    assert everywhere.check_connect("erp.lan", 443) == ["10.1.2.3"]
    assert everywhere.check_url("https://10.9.8.7") == "https://10.9.8.7"
    with pytest.raises(EndpointRefused, match=r"files\.lan"):
        everywhere.check_connect("files.lan", 443)
    with pytest.raises(EndpointRefused, match="ESM_ALLOWED_HOSTS: 'not a host!'"):
        EndpointPolicy.from_env({"ESM_ALLOWED_HOSTS": "not a host!"})


def test_every_refusal_reaches_the_audit_hook(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    with pytest.raises(EndpointRefused):
        EndpointPolicy.from_env({}, mapping="'Stripe'").check_url(
            "https://169.254.169.254/?api_key=sk_test_abcdef99"
        )
    (record,) = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    event = record.audit  # type: ignore[attr-defined]
    assert event["action"] == "endpoint_refused" and event["outcome"] == "refused"
    assert event["mapping"] == "'Stripe'" and event["target"] == "169.254.169.254"
    assert "cloud metadata" in event["detail"]
    assert "sk_test_abcdef99" not in caplog.text
