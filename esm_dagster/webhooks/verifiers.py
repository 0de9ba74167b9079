"""One verifier per provider signature scheme, each exactly as the provider signs (PROVIDERS.md).

A verifier takes the request as received (raw body bytes: a parsed and re-serialised body would
not match) and the mapping's key, and either returns the delivery's *replay token* (the signature
material unique to this signed request, so the same request sent twice can be told apart from a
provider retry, which is signed anew) or raises `WebhookRejected`. Every comparison of a secret
or a MAC is constant-time (`hmac.compare_digest`); a signature that does not even decode is a
mismatch, not an exception that would tell an attacker more.

Time windows are the providers' own: Stripe 300 s (past only, as its SDK), Slack 300 s either
way, HubSpot 300 s old. Twilio, SendGrid, Telegram and PayPal document none; for them a replay
is caught by the inbox (same signature, same event id).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, parse_qsl, unquote, urlsplit, urlunsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from esm_dagster.security.secret import Secret
from esm_dagster.webhooks.errors import WebhookRejected, bad_signature, malformed, missing, stale

STRIPE_TOLERANCE = 300
SLACK_TOLERANCE = 300
HUBSPOT_TOLERANCE = 300


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A webhook request as it arrived: `url` is the one the provider addressed (scheme, host,
    port, path and query), `headers` have lower-cased names."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.lower())
        return value if value else None

    def required(self, name: str) -> str:
        value = self.header(name)
        if value is None:
            raise missing(name)
        return value

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()


def _equal(expected: str | bytes, given: str | bytes) -> bool:
    a = expected.encode() if isinstance(expected, str) else expected
    b = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def _unix_seconds(header: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise malformed(header, "not a Unix time") from None


# ---- Stripe --------------------------------------------------------------------------------------
def verify_stripe(
    request: SignedRequest, secret: Secret, *, now: float, tolerance: int = STRIPE_TOLERANCE
) -> str:
    """`Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`: HMAC-SHA256 of "t.body" keyed with the whsec
    secret as-is; any v1 may match (a secret being rolled signs with both); older than the
    tolerance is refused, a future time is not (as stripe-python)."""
    header = request.required("Stripe-Signature")
    timestamp: str | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = value
        elif key == "v1":
            candidates.append(value)
    if timestamp is None:
        raise malformed("Stripe-Signature", "no t= timestamp")
    if not candidates:
        raise WebhookRejected(401, "Stripe-Signature carries no v1 signature")
    signed_at = _unix_seconds("Stripe-Signature", timestamp)
    expected = hmac.new(
        secret.reveal().encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    if not any(_equal(expected, c) for c in candidates):
        raise bad_signature("Stripe v1")
    if signed_at < now - tolerance:
        raise stale("Stripe-Signature t", now - signed_at, tolerance)
    return header


# ---- Twilio --------------------------------------------------------------------------------------
def _twilio_urls(url: str) -> list[str]:
    """The URL as requested, and with the default port added or removed: Twilio's back end is not
    consistent about the port, so its validators try both."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    shown_host = f"[{host}]" if ":" in host else host
    if parts.port is None and default is not None:
        other = parts._replace(netloc=f"{prefix}{shown_host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=f"{prefix}{shown_host}")
    else:
        return [url]
    return [url, urlunsplit(other)]


def twilio_expected(url: str, params: list[tuple[str, str]], token: Secret) -> str:
    """base64(HMAC-SHA1(AuthToken, url + each sorted name + each of its sorted distinct values))."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    data = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(token.reveal().encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def verify_twilio(request: SignedRequest, token: Secret, *, now: float = 0.0) -> str:
    """`X-Twilio-Signature`. Form bodies: their parameters are signed. JSON bodies: the URL carries
    `bodySHA256=<hex sha256(body)>`, the parameters are empty and the body hash is checked."""
    signature = request.required("X-Twilio-Signature")
    query = parse_qs(urlsplit(request.url).query)
    params: list[tuple[str, str]] = []
    body_ok = True
    if "bodySHA256" in query:
        body_ok = _equal(hashlib.sha256(request.body).hexdigest(), query["bodySHA256"][0])
    elif request.content_type == "application/x-www-form-urlencoded":
        try:
            params = parse_qsl(request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise WebhookRejected(400, "form body is not UTF-8") from None
    matches = [_equal(twilio_expected(u, params, token), signature) for u in _twilio_urls(request.url)]
    if not (body_ok and any(matches)):
        raise bad_signature("X-Twilio-Signature")
    return signature


# ---- SendGrid ------------------------------------------------------------------------------------
def load_sendgrid_key(public_key: Secret | str) -> ec.EllipticCurvePublicKey:
    """The Event Webhook verification key as SendGrid shows it: base64 DER SubjectPublicKeyInfo
    (a PEM block is accepted too)."""
    text = public_key.reveal() if isinstance(public_key, Secret) else public_key
    text = text.strip()
    try:
        key = (
            load_pem_public_key(text.encode())
            if text.startswith("-----BEGIN")
            else load_der_public_key(base64.b64decode("".join(text.split())))
        )
    except (ValueError, binascii.Error):
        raise WebhookRejected(
            503, "the mapping's SendGrid verification key is not a P-256 public key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise WebhookRejected(503, "the mapping's SendGrid verification key is not a P-256 public key")
    return key


def verify_sendgrid(request: SignedRequest, public_key: Secret | str, *, now: float = 0.0) -> str:
    """ECDSA P-256 / SHA-256 over timestamp + raw body; signature base64 DER."""
    signature = request.required("X-Twilio-Email-Event-Webhook-Signature")
    timestamp = request.required("X-Twilio-Email-Event-Webhook-Timestamp")
    key = load_sendgrid_key(public_key)
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            timestamp.encode() + request.body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise bad_signature("SendGrid ECDSA") from None
    return signature


# ---- Slack ---------------------------------------------------------------------------------------
def verify_slack(
    request: SignedRequest, signing_secret: Secret, *, now: float, tolerance: int = SLACK_TOLERANCE
) -> str:
    """`X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:" + ts + ":" + body))`, |now - ts| <= 5 min."""
    signature = request.required("X-Slack-Signature")
    timestamp = request.required("X-Slack-Request-Timestamp")
    signed_at = _unix_seconds("X-Slack-Request-Timestamp", timestamp)
    base = b"v0:" + timestamp.encode() + b":" + request.body
    expected = "v0=" + hmac.new(signing_secret.reveal().encode(), base, hashlib.sha256).hexdigest()
    if not _equal(expected, signature):
        raise bad_signature("X-Slack-Signature v0")
    if abs(now - signed_at) > tolerance:
        raise stale("X-Slack-Request-Timestamp", abs(now - signed_at), tolerance)
    return signature


# ---- HubSpot -------------------------------------------------------------------------------------
# HubSpot's docs decode these escapes in the URI before signing [3P]; both forms are tried, each
# under the app secret, so the leniency admits nothing HubSpot did not sign.
_HUBSPOT_DECODED = ("%3A", "%2F", "%3F", "%40", "%21", "%24", "%27", "%28", "%29", "%2A", "%2C", "%3B")


def _hubspot_uris(url: str) -> list[str]:
    decoded = url
    for escape in _HUBSPOT_DECODED:
        decoded = decoded.replace(escape, unquote(escape)).replace(escape.lower(), unquote(escape))
    return [url] if decoded == url else [url, decoded]


def verify_hubspot(
    request: SignedRequest, client_secret: Secret, *, now: float, tolerance: int = HUBSPOT_TOLERANCE
) -> str:
    """`X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret, method + uri + body + ts))`, with
    `X-HubSpot-Request-Timestamp` in milliseconds, refused when more than 5 minutes old."""
    signature = request.required("X-HubSpot-Signature-v3")
    timestamp = request.required("X-HubSpot-Request-Timestamp")
    signed_ms = _unix_seconds("X-HubSpot-Request-Timestamp", timestamp)
    body = request.body.decode("utf-8", errors="surrogateescape")
    ok = False
    for uri in _hubspot_uris(request.url):
        message = f"{request.method.upper()}{uri}{body}{timestamp}".encode("utf-8", errors="surrogateescape")
        digest = hmac.new(client_secret.reveal().encode(), message, hashlib.sha256).digest()
        ok = _equal(base64.b64encode(digest), signature) or ok
    if not ok:
        raise bad_signature("X-HubSpot-Signature-v3")
    age = now - signed_ms / 1000
    if age > tolerance:
        raise stale("X-HubSpot-Request-Timestamp", age, tolerance)
    return signature


# ---- Telegram ------------------------------------------------------------------------------------
def verify_telegram(request: SignedRequest, secret_token: Secret, *, now: float = 0.0) -> None:
    """`X-Telegram-Bot-Api-Secret-Token` equals the `secret_token` given to setWebhook. It is the
    same on every delivery, so there is no replay token: the update_id catches repeats."""
    given = request.required("X-Telegram-Bot-Api-Secret-Token")
    if not _equal(secret_token.reveal(), given):
        raise WebhookRejected(401, "X-Telegram-Bot-Api-Secret-Token does not match")


# ---- PayPal --------------------------------------------------------------------------------------
PAYPAL_ALGORITHM = "SHA256withRSA"


def _paypal_cert_url_ok(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and (host == "paypal.com" or host.endswith(".paypal.com"))


def verify_paypal(
    request: SignedRequest, webhook_id: str, certificate_pem: Secret | str, *, now: float
) -> str:
    """The offline check: RSA-SHA256 (PKCS#1 v1.5) of
    `transmission_id|transmission_time|webhook_id|crc32(raw body)` (CRC32 in decimal) under the
    certificate's key. The certificate is the one pinned on the mapping (`webhook_cert`): the
    `PAYPAL-CERT-URL` header is checked to point at PayPal but never fetched, so a request cannot
    make the receiver download anything."""
    transmission_id = request.required("PAYPAL-TRANSMISSION-ID")
    transmission_time = request.required("PAYPAL-TRANSMISSION-TIME")
    signature = request.required("PAYPAL-TRANSMISSION-SIG")
    cert_url = request.required("PAYPAL-CERT-URL")
    algorithm = request.required("PAYPAL-AUTH-ALGO")
    if algorithm != PAYPAL_ALGORITHM:
        raise malformed("PAYPAL-AUTH-ALGO", f"{algorithm!r} is not {PAYPAL_ALGORITHM}")
    if not _paypal_cert_url_ok(cert_url):
        raise malformed("PAYPAL-CERT-URL", "not an https URL on paypal.com")
    pem = certificate_pem.reveal() if isinstance(certificate_pem, Secret) else certificate_pem
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        raise WebhookRejected(503, "the mapping's PayPal webhook_cert is not a PEM certificate") from None
    moment = dt.datetime.fromtimestamp(now, dt.UTC)
    if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
        raise WebhookRejected(401, "the PayPal signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise WebhookRejected(503, "the mapping's PayPal webhook_cert does not hold an RSA key")
    message = f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(request.body)}"
    try:
        key.verify(
            base64.b64decode(signature, validate=True),
            message.encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise bad_signature("PAYPAL-TRANSMISSION-SIG") from None
    return signature
