"""The Twilio emulator's protocol details, over raw HTTP: auth bodies, paging tokens, filters, faults."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from esm_dagster.sandbox.twilio import TwilioEmulator

ACCOUNT = "AC" + "abcdefabcdefabcdefabcdefabcdef12"
TOKEN = "emulator-auth-token-5566"
LIST = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


@pytest.fixture
def emulator() -> Iterator[TwilioEmulator]:
    with TwilioEmulator(account_sid=ACCOUNT, auth_token=TOKEN, messages=40, seed=2) as em:
        yield em


@pytest.fixture
def http(emulator: TwilioEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.url, auth=(ACCOUNT, TOKEN)) as client:
        yield client


@pytest.mark.parametrize(
    "auth", [None, (ACCOUNT, "wrong-token"), ("AC" + "0" * 32, TOKEN)], ids=["none", "wrong", "other-account"]
)
def test_unauthenticated_requests_get_twilios_401(
    emulator: TwilioEmulator, auth: tuple[str, str] | None
) -> None:
    response = httpx.get(emulator.url + LIST, auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_page_tokens_go_forward_and_back(http: httpx.Client) -> None:
    first = http.get(LIST, params={"PageSize": 15}).json()
    second = http.get(first["next_page_uri"]).json()
    assert (second["page"], second["start"], second["end"]) == (1, 15, 29)
    back = http.get(second["previous_page_uri"]).json()
    assert [m["sid"] for m in back["messages"]] == [m["sid"] for m in first["messages"]]
    assert first["previous_page_uri"] is None and "PageToken=PA" in first["next_page_uri"]


@pytest.mark.parametrize(
    ("params", "code"),
    [({"PageSize": 1001}, 20007), ({"PageToken": "PASMnope"}, 21481), ({"DateSent>": "01/02/2026"}, 21422)],
)
def test_bad_list_parameters_are_400s_with_a_code(
    http: httpx.Client, params: dict[str, object], code: int
) -> None:
    response = http.get(LIST, params=params)
    assert response.status_code == 400 and response.json()["code"] == code


def test_date_sent_filters_are_whole_gmt_days_inclusive(http: httpx.Client, emulator: TwilioEmulator) -> None:
    every = emulator.messages()
    day = every[20]["date_sent"][5:16]  # "12 Jan 2026"
    on_day = [m["sid"] for m in every if m["date_sent"][5:16] == day]
    iso = __import__("datetime").datetime.strptime(day, "%d %b %Y").strftime("%Y-%m-%d")
    both = http.get(LIST, params={"DateSent>": iso, "DateSent<": iso, "PageSize": 1000}).json()
    exact = http.get(LIST, params={"DateSent": iso, "PageSize": 1000}).json()
    assert [m["sid"] for m in both["messages"]] == [m["sid"] for m in exact["messages"]] == on_day


def test_the_same_post_twice_sends_twice(http: httpx.Client, emulator: TwilioEmulator) -> None:
    form = {"To": "+66812223333", "From": "+15005550006", "Body": "hello"}
    a, b = http.post(LIST, data=form), http.post(LIST, data=form)
    assert a.status_code == b.status_code == 201 and a.json()["sid"] != b.json()["sid"]
    assert sum(m["to"] == form["To"] for m in emulator.messages()) == 2


@pytest.mark.parametrize(
    ("form", "code"),
    [
        ({"From": "+15005550006", "Body": "x"}, 21604),
        ({"To": "+66812223333", "Body": "x"}, 21603),
        ({"To": "+66812223333", "From": "+15005550006"}, 21602),
        ({"To": "0812", "From": "+15005550006", "Body": "x"}, 21211),
    ],
)
def test_create_validation(http: httpx.Client, form: dict[str, str], code: int) -> None:
    response = http.post(LIST, data=form)
    assert response.status_code == 400 and response.json()["code"] == code


def test_faults_answer_with_twilios_bodies(http: httpx.Client, emulator: TwilioEmulator) -> None:
    emulator.faults.rate_limit_next(1, retry_after=3)
    limited = http.get(LIST)
    assert (limited.status_code, limited.json()["code"]) == (429, 20429)
    assert "Retry-After" not in limited.headers  # unconfirmed for Messages: off unless asked for
    emulator.retry_after_header = True
    emulator.faults.rate_limit_next(1, retry_after=3)
    assert http.get(LIST).headers["Retry-After"] == "3"
    emulator.faults.fail_next(1, status=503)
    failed = http.get(LIST)
    assert (failed.status_code, failed.json()["code"]) == (503, 20500)


def test_seeding_is_deterministic() -> None:
    def sids(seed: int) -> list[str]:
        with TwilioEmulator(account_sid=ACCOUNT, auth_token=TOKEN, messages=10, seed=seed) as em:
            return [m["sid"] for m in em.messages()]

    assert sids(3) == sids(3) != sids(4)


def test_a_mutation_between_pages_lands_behind_the_cursor(
    http: httpx.Client, emulator: TwilioEmulator
) -> None:
    emulator.faults.mutate_next(1, backdate=60, path=LIST)
    first = http.get(LIST, params={"PageSize": 20}).json()
    second = http.get(first["next_page_uri"]).json()
    [(changed, created)] = emulator.mutations
    assert changed == first["messages"][-1]["sid"]
    served = {m["sid"] for m in first["messages"] + second["messages"]}
    assert created not in served and len(served) == 40  # newest first: the new one sorts onto page 1
    assert emulator.messages()[0]["sid"] == created
