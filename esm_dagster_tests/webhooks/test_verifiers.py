"""Each provider's signature scheme: the providers' published vectors, our signers (the emulators'
side) against them, and the verifiers against both, with every way a request can be wrong.

Published vectors: Slack's "Verifying requests from Slack" example, Twilio's request-validator
example (twilio-python's tests), SendGrid's Event Webhook example (the sendgrid SDKs' tests).
Stripe, HubSpot, Telegram and PayPal publish no fixed vector; for them the signer is written from
the provider's description and the verifier must accept it and refuse every alteration.
"""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from esm_dagster.sandbox import webhook_signers as signers
from esm_dagster.security.secret import Secret
from esm_dagster.webhooks.errors import WebhookRejected
from esm_dagster.webhooks.verifiers import (
    SignedRequest,
    verify_hubspot,
    verify_paypal,
    verify_sendgrid,
    verify_slack,
    verify_stripe,
    verify_telegram,
    verify_twilio,
)

NOW = 1_780_000_000


def request(
    headers: dict[str, str], body: bytes, url: str = "https://hooks.example/webhooks/x", method: str = "POST"
):
    return SignedRequest(
        method=method, url=url, headers={k.lower(): v for k, v in headers.items()}, body=body
    )


def rejected(call, status: int, words: str, secret: str | None = None) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        call()
    assert info.value.status == status, info.value.reason
    assert words in info.value.reason
    if secret is not None:
        assert secret not in str(info.value) and secret not in repr(info.value)
    return info.value


# ---- Slack ---------------------------------------------------------------------------------------
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = 1531420618
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_slack_published_vector() -> None:
    headers = {"X-Slack-Request-Timestamp": str(SLACK_TS), "X-Slack-Signature": SLACK_SIGNATURE}
    assert signers.slack_headers(SLACK_BODY, SLACK_SECRET, SLACK_TS) == headers
    assert (
        verify_slack(request(headers, SLACK_BODY), Secret(SLACK_SECRET), now=SLACK_TS + 10) == SLACK_SIGNATURE
    )


def test_slack_rejections() -> None:
    secret = Secret(SLACK_SECRET)
    good = signers.slack_headers(SLACK_BODY, SLACK_SECRET, NOW)
    rejected(
        lambda: verify_slack(request(good, SLACK_BODY + b"x"), secret, now=NOW),
        401,
        "does not match",
        SLACK_SECRET,
    )
    rejected(lambda: verify_slack(request(good, SLACK_BODY), secret, now=NOW + 301), 401, "window is 300 s")
    rejected(lambda: verify_slack(request(good, SLACK_BODY), secret, now=NOW - 301), 401, "window is 300 s")
    no_sig = {"X-Slack-Request-Timestamp": str(NOW)}
    rejected(
        lambda: verify_slack(request(no_sig, SLACK_BODY), secret, now=NOW), 401, "missing X-Slack-Signature"
    )
    bad_ts = {**good, "X-Slack-Request-Timestamp": "yesterday"}
    rejected(lambda: verify_slack(request(bad_ts, SLACK_BODY), secret, now=NOW), 400, "not a Unix time")
    wrong_key = signers.slack_headers(SLACK_BODY, "another-signing-secret", NOW)
    rejected(lambda: verify_slack(request(wrong_key, SLACK_BODY), secret, now=NOW), 401, "does not match")


# ---- Twilio --------------------------------------------------------------------------------------
TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
TWILIO_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_twilio_published_vector() -> None:
    assert signers.twilio_signature(TWILIO_URL, TWILIO_PARAMS, TWILIO_TOKEN) == TWILIO_SIGNATURE
    body = signers.twilio_form(dict(reversed(list(TWILIO_PARAMS.items()))))  # order does not matter
    signed = request({**FORM, "X-Twilio-Signature": TWILIO_SIGNATURE}, body, url=TWILIO_URL)
    assert verify_twilio(signed, Secret(TWILIO_TOKEN)) == TWILIO_SIGNATURE


def test_twilio_json_body_hash_matches_the_published_example() -> None:
    # Twilio's JSON example: this body hashes to the bodySHA256 in its example URL.
    body = b'{"CallSid":"CA1234567890ABCDE","Caller":"+12349013030"}'
    url = signers.twilio_json_url("https://example.com/myapp", body)
    assert (
        url
        == "https://example.com/myapp?bodySHA256=5ccde7145dfb8f56479710896586cb9d5911809d83afbe34627818790db0aec9"
    )
    signature = signers.twilio_signature(url, {}, TWILIO_TOKEN)
    json_headers = {"Content-Type": "application/json", "X-Twilio-Signature": signature}
    assert verify_twilio(request(json_headers, body, url=url), Secret(TWILIO_TOKEN)) == signature
    rejected(
        lambda: verify_twilio(request(json_headers, body + b" ", url=url), Secret(TWILIO_TOKEN)),
        401,
        "does not match",
    )


def test_twilio_port_variants_and_repeated_parameters() -> None:
    token = Secret("twilio-auth-token-0001")
    params = {"MessageSid": "SM1", "MessageStatus": "delivered", "MediaUrl": ["https://b", "https://a"]}
    body = b"MessageSid=SM1&MessageStatus=delivered&MediaUrl=https%3A%2F%2Fb&MediaUrl=https%3A%2F%2Fa"
    signature = signers.twilio_signature("https://sms.example/webhooks/twilio", params, token)
    for received in ("https://sms.example/webhooks/twilio", "https://sms.example:443/webhooks/twilio"):
        assert verify_twilio(request({**FORM, "X-Twilio-Signature": signature}, body, url=received), token)
    other = "https://sms.example/webhooks/twilio?x=1"
    rejected(
        lambda: verify_twilio(request({**FORM, "X-Twilio-Signature": signature}, body, url=other), token),
        401,
        "X-Twilio-Signature",
    )
    tampered = body.replace(b"delivered", b"failed")
    rejected(
        lambda: verify_twilio(request({**FORM, "X-Twilio-Signature": signature}, tampered), token),
        401,
        "does not match",
        token.reveal(),
    )
    rejected(lambda: verify_twilio(request(FORM, body), token), 401, "missing X-Twilio-Signature")


# ---- SendGrid ------------------------------------------------------------------------------------
SENDGRID_KEY = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA=="
SENDGRID_SIGNATURE = (
    "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0="
)
SENDGRID_TS = "1588788367"
SENDGRID_PAYLOAD = b'{"category":"example_payload","event":"test_event","message_id":"message_id"}'


def test_sendgrid_published_vector() -> None:
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": SENDGRID_SIGNATURE,
        "X-Twilio-Email-Event-Webhook-Timestamp": SENDGRID_TS,
    }
    assert verify_sendgrid(request(headers, SENDGRID_PAYLOAD), SENDGRID_KEY) == SENDGRID_SIGNATURE
    # The SDKs' failing cases: another timestamp, another payload, another key.
    older = {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": "1388788367"}
    rejected(lambda: verify_sendgrid(request(older, SENDGRID_PAYLOAD), SENDGRID_KEY), 401, "SendGrid ECDSA")
    rejected(
        lambda: verify_sendgrid(request(headers, SENDGRID_PAYLOAD[:-1] + b',"x":1}'), SENDGRID_KEY),
        401,
        "ECDSA",
    )
    other_key = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXSJCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
    rejected(lambda: verify_sendgrid(request(headers, SENDGRID_PAYLOAD), other_key), 401, "ECDSA")


def test_sendgrid_signer_round_trip_and_bad_inputs() -> None:
    private, public = signers.sendgrid_keypair()
    body = json.dumps([{"email": "a@b.example", "event": "delivered", "sg_event_id": "e1"}]).encode()
    headers = signers.sendgrid_headers(body, private, NOW)
    assert verify_sendgrid(request(headers, body), public)
    pem = "-----BEGIN PUBLIC KEY-----\n" + public + "\n-----END PUBLIC KEY-----\n"
    assert verify_sendgrid(request(headers, body), Secret(pem))
    garbled = {**headers, "X-Twilio-Email-Event-Webhook-Signature": "not base64!"}
    rejected(lambda: verify_sendgrid(request(garbled, body), public), 401, "ECDSA")
    no_ts = {"X-Twilio-Email-Event-Webhook-Signature": headers["X-Twilio-Email-Event-Webhook-Signature"]}
    rejected(
        lambda: verify_sendgrid(request(no_ts, body), public),
        401,
        "missing X-Twilio-Email-Event-Webhook-Timestamp",
    )
    rejected(lambda: verify_sendgrid(request(headers, body), "bm90IGEga2V5"), 503, "not a P-256 public key")


# ---- Stripe --------------------------------------------------------------------------------------
STRIPE_SECRET = "whsec_test_5Ya0kQ9sS1xv2bZ3cD4eF5gH6iJ7kL8m"


def stripe_event_body() -> bytes:
    """An event in the format Stripe sends: the `event` fixture of stripe-mock's fixtures3.json."""
    from esm_dagster.sandbox.stripe.data import fixture_resources

    event = fixture_resources()["event"]
    assert event["object"] == "event" and event["id"].startswith("evt_")
    return json.dumps(event, indent=2).encode()


def test_stripe_signer_matches_the_sdk_header_format_and_verifies() -> None:
    body = stripe_event_body()
    header = signers.stripe_signature_header(body, STRIPE_SECRET, NOW)
    t, v1 = header.split(",")
    assert t == f"t={NOW}" and v1.startswith("v1=") and len(v1) == 3 + 64
    assert (
        verify_stripe(request({"Stripe-Signature": header}, body), Secret(STRIPE_SECRET), now=NOW + 299)
        == header
    )
    # A future timestamp passes (stripe-python checks the past only); a secret being rolled signs twice.
    assert verify_stripe(request({"Stripe-Signature": header}, body), Secret(STRIPE_SECRET), now=NOW - 3600)
    rolled = signers.stripe_signature_header(body, ["whsec_old_secret_value", STRIPE_SECRET], NOW)
    assert verify_stripe(
        request({"Stripe-Signature": rolled + ",v0=ignored"}, body), Secret(STRIPE_SECRET), now=NOW
    )


def test_stripe_rejections() -> None:
    body = stripe_event_body()
    secret = Secret(STRIPE_SECRET)
    header = signers.stripe_signature_header(body, STRIPE_SECRET, NOW)

    def verify(h: dict[str, str], b: bytes = body, now: float = NOW):
        return lambda: verify_stripe(request(h, b), secret, now=now)

    rejected(verify({"Stripe-Signature": header}, now=NOW + 301), 401, "window is 300 s", STRIPE_SECRET)
    rejected(
        verify({"Stripe-Signature": header}, body.replace(b"evt_", b"evt_X")),
        401,
        "does not match",
        STRIPE_SECRET,
    )
    rejected(verify({}), 401, "missing Stripe-Signature")
    rejected(verify({"Stripe-Signature": header.split(",")[0]}), 401, "no v1 signature")
    rejected(verify({"Stripe-Signature": header.split(",")[1]}), 400, "no t= timestamp")
    rejected(verify({"Stripe-Signature": "t=soon," + header.split(",")[1]}), 400, "not a Unix time")
    other = signers.stripe_signature_header(body, "whsec_someone_else", NOW)
    rejected(verify({"Stripe-Signature": other}), 401, "does not match")


# ---- HubSpot -------------------------------------------------------------------------------------
HUBSPOT_SECRET = "a1b2c3d4-hubspot-client-secret"


def test_hubspot_v3_round_trip_and_rejections() -> None:
    body = json.dumps(
        [{"eventId": 100, "subscriptionType": "contact.creation", "occurredAt": NOW * 1000}]
    ).encode()
    uri = "https://crm.example/webhooks/hubspot?portal=62515"
    headers = signers.hubspot_headers("POST", uri, body, HUBSPOT_SECRET, NOW * 1000)
    secret = Secret(HUBSPOT_SECRET)
    assert verify_hubspot(request(headers, body, url=uri), secret, now=NOW + 299)
    rejected(
        lambda: verify_hubspot(request(headers, body, url=uri), secret, now=NOW + 301), 401, "window is 300 s"
    )
    rejected(
        lambda: verify_hubspot(request(headers, body + b" ", url=uri), secret, now=NOW),
        401,
        "does not match",
        HUBSPOT_SECRET,
    )
    rejected(
        lambda: verify_hubspot(request(headers, body, url=uri, method="PUT"), secret, now=NOW),
        401,
        "does not match",
    )
    rejected(
        lambda: verify_hubspot(request(headers, body, url=uri + "&x=1"), secret, now=NOW),
        401,
        "does not match",
    )
    no_ts = {"X-HubSpot-Signature-v3": headers["X-HubSpot-Signature-v3"]}
    rejected(
        lambda: verify_hubspot(request(no_ts, body, url=uri), secret, now=NOW),
        401,
        "missing X-HubSpot-Request-Timestamp",
    )


def test_hubspot_signs_the_decoded_uri() -> None:
    # HubSpot decodes characters like %3A before signing; the request arrives with them encoded.
    body = b"[]"
    signed_uri = "https://crm.example/webhooks/hubspot?next=a:b"
    headers = signers.hubspot_headers("POST", signed_uri, body, HUBSPOT_SECRET, NOW * 1000)
    received = "https://crm.example/webhooks/hubspot?next=a%3Ab"
    assert verify_hubspot(request(headers, body, url=received), Secret(HUBSPOT_SECRET), now=NOW)


# ---- Telegram ------------------------------------------------------------------------------------
def test_telegram_secret_token() -> None:
    token = Secret("telegram_secret-Token_0123456789")
    body = b'{"update_id": 1, "message": {"text": "hi"}}'
    assert verify_telegram(request(signers.telegram_headers(token), body), token) is None
    wrong = signers.telegram_headers("telegram_secret-Token_0123456780")
    rejected(lambda: verify_telegram(request(wrong, body), token), 401, "does not match", token.reveal())
    rejected(
        lambda: verify_telegram(request({}, body), token), 401, "missing X-Telegram-Bot-Api-Secret-Token"
    )


# ---- PayPal --------------------------------------------------------------------------------------
WEBHOOK_ID = "1JE4291016473214C"


def test_paypal_offline_signature_round_trip_and_rejections() -> None:
    key, cert = signers.paypal_signing_identity(dt.datetime.fromtimestamp(NOW, dt.UTC))
    body = json.dumps(
        {"id": "WH-58D329510W468432D-8HN650336L201105X", "event_type": "PAYMENT.CAPTURE.COMPLETED"}
    ).encode()
    when = "2026-06-01T10:00:00Z"
    headers = signers.paypal_headers(
        body, WEBHOOK_ID, key, transmission_id="b2384410-f8d2-11e6", transmission_time=when
    )
    assert (
        verify_paypal(request(headers, body), WEBHOOK_ID, cert, now=NOW) == headers["PAYPAL-TRANSMISSION-SIG"]
    )

    def verify(
        h: dict[str, str] = headers,
        b: bytes = body,
        webhook_id: str = WEBHOOK_ID,
        now: float = NOW,
        pem: str = cert,
    ):
        return lambda: verify_paypal(request(h, b), webhook_id, pem, now=now)

    rejected(verify(b=body.replace(b"COMPLETED", b"DENIED")), 401, "PAYPAL-TRANSMISSION-SIG")
    rejected(verify(webhook_id="OTHERWEBHOOKID"), 401, "PAYPAL-TRANSMISSION-SIG")
    rejected(verify(h={**headers, "PAYPAL-TRANSMISSION-TIME": "2026-06-01T10:00:01Z"}), 401, "does not match")
    rejected(verify(now=NOW + 90 * 86400), 401, "not valid now")
    rejected(verify(h={**headers, "PAYPAL-CERT-URL": "https://evil.example/cert.pem"}), 400, "paypal.com")
    rejected(verify(h={**headers, "PAYPAL-AUTH-ALGO": "SHA1withRSA"}), 400, "PAYPAL-AUTH-ALGO")
    rejected(
        verify(h={k: v for k, v in headers.items() if k != "PAYPAL-TRANSMISSION-ID"}),
        401,
        "missing PAYPAL-TRANSMISSION-ID",
    )
    _, other_cert = signers.paypal_signing_identity(dt.datetime.fromtimestamp(NOW, dt.UTC))
    rejected(verify(pem=other_cert), 401, "does not match")
    rejected(verify(pem="not a certificate"), 503, "not a PEM certificate")


def test_verifiers_use_the_clock_they_are_given() -> None:
    # The real clock: a request signed now is fresh, one signed 10 minutes ago is not.
    body = b'{"id": "evt_1"}'
    now = int(time.time())
    fresh = signers.stripe_signature_header(body, STRIPE_SECRET, now)
    assert verify_stripe(request({"Stripe-Signature": fresh}, body), Secret(STRIPE_SECRET), now=time.time())
    old = signers.stripe_signature_header(body, STRIPE_SECRET, now - 600)
    rejected(
        lambda: verify_stripe(
            request({"Stripe-Signature": old}, body), Secret(STRIPE_SECRET), now=time.time()
        ),
        401,
        "stale",
    )


def test_emulators_deliver_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        signers.deliver("https://hooks.example/webhooks/x", {}, b"{}")
