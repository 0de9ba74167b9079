"""The SendGrid emulator on its own, over raw HTTP: auth, rate-limit window, seed, log redaction."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.sendgrid import SendGridEmulator
from esm_dagster.sandbox.sendgrid.emulator import BAD_KEY
from esm_dagster_tests.sendgrid_fixtures import KEY, OTHER_KEY


@pytest.fixture
def emulator() -> Iterator[SendGridEmulator]:
    with SendGridEmulator(api_keys=[KEY], contacts=12, suppressions=10, seed=9, rate_limit=5) as em:
        yield em


def get(emulator: SendGridEmulator, path: str, key: str | None = KEY, **params: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(emulator.url + path, headers=headers, params=params)  # type: ignore[arg-type]


def test_missing_and_wrong_keys_get_sendgrids_401_bodies(emulator: SendGridEmulator) -> None:
    missing = get(emulator, "/v3/suppression/bounces", key=None)
    wrong = get(emulator, "/v3/suppression/bounces", key=OTHER_KEY)
    assert missing.status_code == wrong.status_code == 401
    assert missing.json() == {"errors": [{"field": None, "message": "authorization required"}]}
    assert wrong.json() == {"errors": [{"field": None, "message": BAD_KEY}]}
    assert OTHER_KEY not in wrong.text


def test_the_per_minute_limit_answers_429_with_the_reset_time(emulator: SendGridEmulator) -> None:
    if time.time() % 60 > 58.5:  # all six requests must fall into one minute window
        time.sleep(60 - time.time() % 60 + 0.05)
    answers = [get(emulator, "/v3/marketing/contacts/count") for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
    assert answers[-1].json() == {"errors": [{"field": None, "message": "too many requests"}]}
    reset = int(answers[-1].headers["X-RateLimit-Reset"])
    assert reset % 60 == 0 and reset == int(answers[0].headers["X-RateLimit-Reset"])


def test_the_same_seed_gives_the_same_data() -> None:
    with SendGridEmulator(api_keys=[KEY], seed=4) as a, SendGridEmulator(api_keys=[KEY], seed=4) as b:
        assert a.contacts == b.contacts and a.suppressions == b.suppressions
    with SendGridEmulator(api_keys=[KEY], seed=5) as c:
        assert c.suppressions != a.suppressions


def test_seeded_lists_hold_malformed_addresses_and_contacts_bad_phones(emulator: SendGridEmulator) -> None:
    bounces = [b["email"] for b in emulator.suppressions["bounces"]]
    assert any("@@" in e or "@" not in e for e in bounces)
    assert any(not c["phone_number"].startswith("+66") for c in emulator.contacts.values())


def test_an_export_link_needs_its_signature_and_the_log_masks_it(emulator: SendGridEmulator) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    started = httpx.post(
        f"{emulator.url}/v3/marketing/contacts/exports", json={"file_type": "json"}, headers=headers
    )
    path = f"/v3/marketing/contacts/exports/{started.json()['id']}"
    httpx.get(emulator.url + path, headers=headers)
    url = httpx.get(emulator.url + path, headers=headers).json()["urls"][0]
    signature = url.rsplit("=", 1)[1]
    assert httpx.get(url).status_code == 200
    assert httpx.get(url.replace(signature, "0" * len(signature))).status_code == 403
    assert all(signature not in r.query for r in emulator.requests)
    assert any(r.query == "X-Amz-Signature=***" for r in emulator.requests)


def test_mail_send_needs_from_subject_and_content(emulator: SendGridEmulator) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    base = {"personalizations": [{"to": [{"email": "a@club.example"}]}]}
    no_from = httpx.post(f"{emulator.url}/v3/mail/send", json=base, headers=headers)
    assert no_from.status_code == 400 and no_from.json()["errors"][0]["field"] == "subject"
    with_template = httpx.post(
        f"{emulator.url}/v3/mail/send",
        json={**base, "from": {"email": "club@padel.example"}, "template_id": "d-123"},
        headers=headers,
    )
    assert with_template.status_code == 202 and with_template.content == b""
    assert with_template.headers["X-Message-Id"] == emulator.messages[-1]["message_id"]


def test_suppressions_reject_a_limit_over_500(emulator: SendGridEmulator) -> None:
    answer = get(emulator, "/v3/suppression/blocks", limit=501)
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "limit"
