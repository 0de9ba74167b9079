"""The providers' side of webhook signing, for the emulators to sign the webhooks they send.

Written from each provider's description of how it signs (PROVIDERS.md and the SDKs' signing
helpers), not from our verifiers: a shared mistake would make both agree and prove nothing. The
tests check these signers against the providers' published vectors where one exists (Slack,
Twilio, SendGrid) and the verifiers against both.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import zlib
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode, urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from esm_dagster.security.endpoints import is_loopback
from esm_dagster.security.secret import Secret

Key = Secret | str


def _raw(key: Key) -> bytes:
    return (key.reveal() if isinstance(key, Secret) else key).encode("utf-8")


# ---- Stripe --------------------------------------------------------------------------------------
def stripe_signature_header(payload: bytes, secrets: Key | Iterable[Key], timestamp: int) -> str:
    """`t=<timestamp>,v1=<hex>` as Stripe sends it; one v1 per secret (during a secret roll Stripe
    signs with the old and the new one)."""
    keys = [secrets] if isinstance(secrets, Secret | str) else list(secrets)
    signed = f"{timestamp}.".encode() + payload
    parts = [f"t={timestamp}"]
    parts += [f"v1={hmac.new(_raw(k), signed, hashlib.sha256).hexdigest()}" for k in keys]
    return ",".join(parts)


# ---- Twilio --------------------------------------------------------------------------------------
def twilio_signature(url: str, params: Mapping[str, str | list[str]], auth_token: Key) -> str:
    """`X-Twilio-Signature`: the URL, then every parameter name in sorted order followed by each of
    its distinct values in sorted order; HMAC-SHA1 under the Auth Token, base64."""
    data = url
    for name in sorted(params):
        raw = params[name]
        values = [raw] if isinstance(raw, str) else raw
        for value in sorted(set(values)):
            data += name + value
    return base64.b64encode(hmac.new(_raw(auth_token), data.encode(), hashlib.sha1).digest()).decode()


def twilio_form(params: Mapping[str, str]) -> bytes:
    return urlencode(params).encode()


def twilio_json_url(url: str, body: bytes) -> str:
    """The URL Twilio calls with a JSON body: `bodySHA256=<hex>` appended, then signed without params."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}bodySHA256={hashlib.sha256(body).hexdigest()}"


# ---- SendGrid ------------------------------------------------------------------------------------
def sendgrid_keypair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    """A P-256 signing key and its verification key as SendGrid shows it (base64 DER SPKI)."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(der).decode()


def sendgrid_headers(body: bytes, private_key: ec.EllipticCurvePrivateKey, timestamp: int) -> dict[str, str]:
    signature = private_key.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": str(timestamp),
    }


# ---- Slack ---------------------------------------------------------------------------------------
def slack_headers(body: bytes, signing_secret: Key, timestamp: int) -> dict[str, str]:
    base = f"v0:{timestamp}:".encode() + body
    return {
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": "v0=" + hmac.new(_raw(signing_secret), base, hashlib.sha256).hexdigest(),
    }


# ---- HubSpot -------------------------------------------------------------------------------------
def hubspot_headers(
    method: str, uri: str, body: bytes, client_secret: Key, timestamp_ms: int
) -> dict[str, str]:
    source = f"{method}{uri}{body.decode('utf-8')}{timestamp_ms}".encode()
    digest = hmac.new(_raw(client_secret), source, hashlib.sha256).digest()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": str(timestamp_ms),
    }


# ---- Telegram ------------------------------------------------------------------------------------
def telegram_headers(secret_token: Key) -> dict[str, str]:
    return {"X-Telegram-Bot-Api-Secret-Token": _raw(secret_token).decode()}


# ---- PayPal --------------------------------------------------------------------------------------
PAYPAL_CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-sandbox"


def paypal_signing_identity(
    now: dt.datetime | None = None, *, days: int = 30
) -> tuple[rsa.RSAPrivateKey, str]:
    """An RSA key and a self-signed certificate for it (PEM), standing in for PayPal's signing cert."""
    moment = now or dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.sandbox.paypal.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - dt.timedelta(days=1))
        .not_valid_after(moment + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


def paypal_headers(
    body: bytes,
    webhook_id: str,
    private_key: rsa.RSAPrivateKey,
    *,
    transmission_id: str,
    transmission_time: str,
    cert_url: str = PAYPAL_CERT_URL,
) -> dict[str, str]:
    """The PAYPAL-* headers: RSA-SHA256 over `id|time|webhook_id|crc32(body)` (CRC32 in decimal)."""
    message = f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(body) & 0xFFFFFFFF}"
    signature = private_key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-TIME": transmission_time,
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
        "PAYPAL-CERT-URL": cert_url,
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
    }


# ---- sending -------------------------------------------------------------------------------------
def deliver(url: str, headers: Mapping[str, str], body: bytes, *, timeout: float = 5.0) -> httpx.Response:
    """POST a signed webhook the way the provider does, to a receiver on loopback only: an
    emulator must never send anything to a real host."""
    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        raise ValueError(f"emulated webhooks go to loopback only, not {host!r}")
    return httpx.post(url, headers=dict(headers), content=body, timeout=timeout)
