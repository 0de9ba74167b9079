"""Deterministic Stripe test data: Stripe's own fixture objects expanded into many varied records.

`fixtures3.json` (Stripe's public example object for every resource, MIT, copied unchanged into
`esm_dagster/sandbox/data/`) gives the shape: every generated customer and charge has exactly the
fixture's keys, in the fixture's order. The generator varies what integrations trip on: plus and IDN
email addresses, Thai phones in four spellings, international phones, missing fields, a small fixed
share of invalid emails and phones, zero- and three-decimal currencies, failed and pending charges,
and ties in `created`.

Records are kept as compact tuples and turned into Stripe-shaped dicts only when served, so 100k
charges cost a few tens of MB and generate in about a second.
"""

from __future__ import annotations

import bisect
import copy
import functools
import gc
import importlib.resources
import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from esm_dagster.sandbox.jsonshape import JsonShape, RawJSON, encode

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
DEFAULT_START = 1788220800  # 2026-09-01T00:00:00Z
DEFAULT_END = 1796083200  # 2026-12-01T00:00:00Z
DEFAULT_API_VERSION = "2026-07-29.dahlia"  # info.version of the stored spec subset

T = TypeVar("T")


@functools.cache
def fixture_resources() -> dict[str, Any]:
    """`resources` of Stripe's fixtures3.json (parsed once per process; callers must not mutate)."""
    text = (
        importlib.resources.files("esm_dagster.sandbox")
        .joinpath("data/stripe_fixtures3.json")
        .read_text(encoding="utf-8")
    )
    resources: dict[str, Any] = json.loads(text)["resources"]
    return resources


def random_id(rng: random.Random, prefix: str, length: int) -> str:
    return prefix + "".join(rng.choices(ALNUM, k=length))


# ---- pools ----------------------------------------------------------------------------------------

# (name as shown, ASCII email local part)
PEOPLE: tuple[tuple[str, str], ...] = (
    ("Somchai Jaidee", "somchai.j"),
    ("สมชาย ใจดี", "somchai"),
    ("Suda Srisuk", "suda.s"),
    ("สุดา ศรีสุข", "suda"),
    ("Anan Chaiyaporn", "anan.c"),
    ("Kanya Wongsawat", "kanya.w"),
    ("Niran Boonmee", "niran"),
    ("Pimchanok Rattanakul", "pim.r"),
    ("Wichai Thongdee", "wichai.t"),
    ("Malee Sukjai", "malee"),
    ("John Smith", "jsmith"),
    ("Anna Müller", "anna.mueller"),
    ("José García", "jose.garcia"),
    ("Zoë O'Neill", "zoe.oneill"),
    ("山田 太郎", "taro.yamada"),
    ("Hiroshi Tanaka", "h.tanaka"),
    ("Priya Raman", "priya.r"),
    ("Nguyễn Văn An", "an.nguyen"),
)
PLAIN_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.co.th")
IDN_DOMAINS = ("ตัวอย่าง.ไทย", "bücher.example", "例え.テスト", "пример.испытание")
PLUS_TAGS = ("test", "club", "promo2026", "billing")
THAI_MOBILE_PREFIXES = tuple(str(n) for n in (*range(61, 67), *range(80, 100)))  # 06x, 08x, 09x
INVALID_EMAIL = "not-an-email"
INVALID_PHONE = "12345"

# (line1, city, state, postal_code, country)
ADDRESSES: tuple[tuple[str | None, str | None, str | None, str | None, str], ...] = (
    ("99 Sukhumvit Rd", "Bangkok", "Bangkok", "10110", "TH"),
    ("1 ถนนพระราม 1", "กรุงเทพมหานคร", "กรุงเทพมหานคร", "10330", "TH"),
    ("12 Nimmanhaemin Rd", "Chiang Mai", "Chiang Mai", "50200", "TH"),
    ("5 Thalang Rd", "Phuket", "Phuket", "83000", "TH"),
    ("88 Mittraphap Rd", "Khon Kaen", "Khon Kaen", "40000", "TH"),
    ("221B Baker St", "London", None, "NW1 6XE", "GB"),
    ("350 5th Ave", "New York", "NY", "10118", "US"),
    ("1-1 Chiyoda", "Tokyo", "Tokyo", "100-0001", "JP"),
    ("Marienplatz 8", "München", "BY", "80331", "DE"),
    (None, None, None, None, "TH"),
)
# (brand, last4, country, funding)
CARDS: tuple[tuple[str, str, str, str], ...] = (
    ("visa", "4242", "US", "credit"),
    ("mastercard", "4444", "US", "credit"),
    ("visa", "1881", "TH", "debit"),
    ("amex", "8431", "US", "credit"),
    ("jcb", "0505", "JP", "credit"),
    ("unionpay", "0005", "CN", "debit"),
)
CHARGE_DESCRIPTIONS: tuple[str | None, ...] = (
    "Membership fee",
    "Court booking",
    "Pro shop purchase",
    "Event ticket",
    "ค่าสมาชิกรายปี",
    None,
)
CUSTOMER_DESCRIPTIONS: tuple[str | None, ...] = (None, None, None, "Gold member", "Corporate account", "VIP")
LOCALES: tuple[tuple[str, ...], ...] = (("th",), ("en",), ("th", "en"), (), ("ja",))
FAILURES = (
    ("card_declined", "Your card was declined."),
    ("insufficient_funds", "Your card has insufficient funds."),
    ("expired_card", "Your card has expired."),
)
# Per-block shares (each block is shuffled, so every category appears once the data reaches a block).
EMAIL_KINDS = (("plain", 31), ("plus", 6), ("idn", 4), ("upper", 2), ("missing", 4), ("invalid", 3))
PHONE_KINDS = (
    ("th_intl_spaced", 8),
    ("th_local_dashed", 8),
    ("th_local_plain", 8),
    ("th_e164", 7),
    ("th_landline", 2),
    ("uk", 4),
    ("us", 4),
    ("missing", 7),
    ("invalid", 2),
)
NAME_KINDS = (("present", 47), ("missing", 3))
CURRENCIES = (("thb", 10), ("usd", 5), ("jpy", 3), ("kwd", 2))
STATUSES = (("succeeded", 16), ("failed", 2), ("pending", 2))
REFUND_SHARE = 0.08  # of succeeded charges
REFUND_REASONS: tuple[str | None, ...] = ("requested_by_customer", "duplicate", None, "requested_by_customer")
# A PaymentIntent's status for its charge's status (a failed card leaves it awaiting a new method).
INTENT_STATUSES = {"succeeded": "succeeded", "failed": "requires_payment_method", "pending": "processing"}


def _schedule(rng: random.Random, n: int, weights: Sequence[tuple[T, int]]) -> list[T]:
    block = [value for value, weight in weights for _ in range(weight)]
    out: list[T] = []
    while len(out) < n:
        shuffled = block[:]
        rng.shuffle(shuffled)
        out.extend(shuffled)
    return out[:n]


def _created_values(rng: random.Random, n: int, start: int, end: int) -> list[int]:
    """Sorted unix times in [start, end), with about 2% deliberate ties."""
    random_, span = rng.random, end - start
    values = sorted(start + int(random_() * span) for _ in range(n))
    for i in range(1, n):
        if random_() < 0.02:
            values[i] = values[i - 1]
    return values


_ID_TABLE = bytes(ord(ALNUM[b % len(ALNUM)]) for b in range(256))


def _unique_ids(rng: random.Random, n: int, prefix: str, length: int, taken: set[str]) -> list[str]:
    """`n` new ids `prefix` + `length` alphanumerics (bytes mapped mod 62: fast, and bias is harmless)."""
    out: list[str] = []
    while len(out) < n:
        need = n - len(out)
        text = rng.randbytes(need * length).translate(_ID_TABLE).decode("ascii")
        for i in range(0, need * length, length):
            new = prefix + text[i : i + length]
            if new not in taken:
                taken.add(new)
                out.append(new)
    return out


def _email(rng: random.Random, kind: str, local: str, number: int) -> str | None:
    if kind == "missing":
        return None
    if kind == "invalid":
        return INVALID_EMAIL
    if kind == "plus":
        return f"{local}{number}+{rng.choice(PLUS_TAGS)}@{rng.choice(PLAIN_DOMAINS)}"
    if kind == "idn":
        return f"{local}{number}@{rng.choice(IDN_DOMAINS)}"
    if kind == "upper":
        return f"{local.title()}{number}@{rng.choice(PLAIN_DOMAINS).upper()}"
    return f"{local}{number}@{rng.choice(PLAIN_DOMAINS)}"


def _phone(rng: random.Random, kind: str) -> str | None:
    if kind == "missing":
        return None
    if kind == "invalid":
        return INVALID_PHONE
    if kind == "uk":
        return f"+44 20 7946 0{rng.randrange(1000):03d}"
    if kind == "us":
        return f"+1 212-555-01{rng.randrange(100):02d}"
    if kind == "th_landline":
        d = f"{rng.randrange(10**7):07d}"
        return f"02-{d[:3]}-{d[3:]}"
    d = rng.choice(THAI_MOBILE_PREFIXES) + f"{rng.randrange(10**7):07d}"  # 9 national digits
    if kind == "th_intl_spaced":
        return f"+66 {d[:2]} {d[2:5]} {d[5:]}"
    if kind == "th_local_dashed":
        return f"0{d[:2]}-{d[2:5]}-{d[5:]}"
    if kind == "th_local_plain":
        return f"0{d}"
    return f"+66{d}"  # th_e164


def _amount(random_: Callable[[], float], currency: str) -> int:
    """An amount in the currency's minor unit, as Stripe takes it."""
    r = random_()
    if currency == "jpy":  # zero-decimal
        return 50 + int(r * 99_950)
    if currency == "kwd":  # three-decimal: Stripe requires the last digit to be 0
        return (10 + int(r * 49_990)) * 10
    if currency == "thb":
        return (20 + int(r * 19_980)) * 100 + (25 * int(random_() * 8) if random_() < 0.3 else 0)
    return 100 + int(r * 499_900)  # usd, cents


# ---- rows -----------------------------------------------------------------------------------------


# Rows start with (created, id): plain tuple order is the list order (oldest first, ties by id), so
# `sorted()` and `bisect` need no key function. Ids are unique, so comparisons never go further.


class CustomerRow(NamedTuple):
    created: int
    id: str
    name: str | None
    email: str | None
    phone: str | None
    description: str | None
    address: int  # index into ADDRESSES, -1 for no address
    currency: str | None
    locales: int
    member_no: int
    invoice_prefix: str


class ChargeRow(NamedTuple):
    created: int
    id: str
    customer: str | None
    currency: str
    amount: int
    status: str
    email: str | None
    name: str | None
    phone: str | None
    address: int  # index into ADDRESSES
    card: int
    description: int
    order_no: int
    refund_amount: int = 0  # what the charge's one refund (if any) gave back, minor units
    refund_created: int = 0
    refund_reason: int = 0  # index into REFUND_REASONS

    @property
    def payment_intent(self) -> str:
        """Every charge is made by one PaymentIntent (the `charges` list's `payment_intent` filter)."""
        return _derived_id("pi_", self.id)


class _OfCharge(NamedTuple):
    created: int
    id: str
    source: ChargeRow


class PaymentIntentRow(_OfCharge):
    """A charge's PaymentIntent: created with it, listed by its own (created, id)."""

    __slots__ = ()

    @property
    def customer(self) -> str | None:  # the `customer` list filter
        return self.source.customer


class RefundRow(_OfCharge):
    """The one refund of a refunded seeded charge."""

    __slots__ = ()

    @property
    def charge(self) -> str:  # the `charge` list filter
        return self.source.id

    @property
    def payment_intent(self) -> str:
        return self.source.payment_intent


class EventRow(NamedTuple):
    created: int
    id: str
    type: str
    kind: str  # "customer" / "charge": `obj` is a seeded row; "snapshot": `obj` is the object dict
    obj: Any
    previous_attributes: dict[str, Any] | None = None
    request_id: str | None = None
    idempotency_key: str | None = None


@dataclass(slots=True)
class Dataset:
    customers: list[CustomerRow]  # sorted by (created, id), oldest first
    charges: list[ChargeRow]
    events: list[EventRow]
    payment_intents: list[PaymentIntentRow]
    refunds: list[RefundRow]


def generate(*, customers: int, charges: int, seed: int, start: int, end: int) -> Dataset:
    """The seeded records: same arguments, same data, in any process."""
    if customers < 0 or charges < 0:
        raise ValueError("customers and charges must be >= 0")
    if end <= start:
        raise ValueError("end must be after start")
    # Hundreds of thousands of new tuples would trigger repeated full GC passes over all of them
    # (none of them can form a cycle), which triples the generation time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _generate(customers=customers, charges=charges, seed=seed, start=start, end=end)
    finally:
        if was_enabled:
            gc.enable()


def _generate(*, customers: int, charges: int, seed: int, start: int, end: int) -> Dataset:
    rng = random.Random(seed)
    taken: set[str] = set()

    cust_created = _created_values(rng, customers, start, end)
    cust_ids = _unique_ids(rng, customers, "cus_", 14, taken)
    email_kinds = _schedule(rng, customers, EMAIL_KINDS)
    phone_kinds = _schedule(rng, customers, PHONE_KINDS)
    name_kinds = _schedule(rng, customers, NAME_KINDS)
    customer_rows: list[CustomerRow] = []
    for i in range(customers):
        name, local = rng.choice(PEOPLE)
        member_no = i + 1
        r = rng.random()
        currency = "thb" if r < 0.5 else "usd" if r < 0.65 else None
        customer_rows.append(
            CustomerRow(
                created=cust_created[i],
                id=cust_ids[i],
                name=name if name_kinds[i] == "present" else None,
                email=_email(rng, email_kinds[i], local, member_no),
                phone=_phone(rng, phone_kinds[i]),
                description=rng.choice(CUSTOMER_DESCRIPTIONS),
                address=rng.randrange(len(ADDRESSES)) if rng.random() < 0.8 else -1,
                currency=currency,
                locales=rng.randrange(len(LOCALES)),
                member_no=member_no,
                invoice_prefix="".join(rng.choices(UPPER_ALNUM, k=8)),
            )
        )
    customer_rows.sort()  # already by created; ties ordered by id

    ch_created = _created_values(rng, charges, start, end)
    ch_ids = _unique_ids(rng, charges, "ch_", 24, taken)
    currencies = _schedule(rng, charges, CURRENCIES)
    statuses = _schedule(rng, charges, STATUSES)
    created_keys = [c.created for c in customer_rows]
    charge_rows: list[ChargeRow] = []
    n_people, n_addresses, n_cards = len(PEOPLE), len(ADDRESSES), len(CARDS)
    n_descriptions = len(CHARGE_DESCRIPTIONS)
    random_, make, append = rng.random, ChargeRow._make, charge_rows.append
    for i in range(charges):
        created = ch_created[i]
        # a charge belongs to a customer that existed when it was made; about 4% are guest charges
        known = bisect.bisect_right(created_keys, created)
        owner = customer_rows[int(random_() * known)] if known and random_() >= 0.04 else None
        if owner is not None:
            customer, email, bill_name, phone = owner.id, owner.email, owner.name, owner.phone
        else:
            guest, local = PEOPLE[int(random_() * n_people)]
            customer, email, bill_name, phone = None, f"{local}.guest{i}@example.com", guest, None
        currency = currencies[i]
        append(
            make(
                (
                    created,
                    ch_ids[i],
                    customer,
                    currency,
                    _amount(random_, currency),
                    statuses[i],
                    email,
                    bill_name,
                    phone,
                    int(random_() * n_addresses),
                    int(random_() * n_cards),
                    int(random_() * n_descriptions),
                    i + 1,
                    0,  # refunds are drawn afterwards, from their own random stream
                    0,
                    0,
                )
            )
        )
    charge_rows = _with_refunds(charge_rows, seed, end)
    charge_rows.sort()

    event_ids = _unique_ids(rng, customers + charges, "evt_", 24, taken)
    make_event = EventRow._make
    events = [
        make_event((row.created, eid, "customer.created", "customer", row, None, None, None))
        for eid, row in zip(event_ids[:customers], customer_rows, strict=True)
    ]
    charge_types = {status: f"charge.{status}" for status, _ in STATUSES}
    events.extend(
        make_event((row.created, eid, charge_types[row.status], "charge", row, None, None, None))
        for eid, row in zip(event_ids[customers:], charge_rows, strict=True)
    )
    events.sort()
    intents = sorted(PaymentIntentRow(row.created, row.payment_intent, row) for row in charge_rows)
    refunds = sorted(
        RefundRow(row.refund_created, _derived_id("re_", row.id), row)
        for row in charge_rows
        if row.refund_amount
    )
    return Dataset(customer_rows, charge_rows, events, intents, refunds)


def _with_refunds(rows: list[ChargeRow], seed: int, end: int) -> list[ChargeRow]:
    """A share of succeeded charges refunded, in full or in part, minutes to days later.

    A random stream of its own, so the customers, charges and events of a seed stay what they were
    before refunds existed.
    """
    rng = random.Random(f"stripe-refunds:{seed}")
    out: list[ChargeRow] = []
    for row in rows:
        if row.status != "succeeded" or rng.random() >= REFUND_SHARE:
            out.append(row)
            continue
        amount = row.amount
        if rng.random() < 0.4:  # partial: half, kept valid for the currency's minor unit
            amount = max(10, row.amount // 20 * 10) if row.currency == "kwd" else max(1, row.amount // 2)
        when = min(row.created + rng.randrange(600, 10 * 86_400), max(row.created, end - 1))
        out.append(row._replace(refund_amount=amount, refund_created=when, refund_reason=rng.randrange(4)))
    return out


# ---- objects --------------------------------------------------------------------------------------
# Every object is the fixture with the keys below replaced; `JsonShape` keeps the rest as pre-encoded
# text, so list pages serialise fast and byte-identical to `json.dumps(obj, ensure_ascii=False)`.


@functools.cache
def _shapes() -> dict[str, JsonShape]:
    resources = fixture_resources()
    customer = dict(resources["customer"])
    customer.update(  # same for every seeded customer (the fixture's own values are placeholders)
        balance=0,
        default_source=None,
        delinquent=False,
        discount=None,
        livemode=False,
        next_invoice_sequence=1,
        shipping=None,
        tax_exempt="none",
        test_clock=None,
    )
    charge = dict(resources["charge"])
    charge.update(fraud_details={}, livemode=False, shipping=None, transfer_data=None)
    card = resources["charge"]["payment_method_details"]["card"]
    card_shape = JsonShape(
        card,
        (
            "brand",
            "country",
            "exp_month",
            "exp_year",
            "fingerprint",
            "funding",
            "last4",
            "network",
            "overcapture",
        ),
    )
    billing_shape = JsonShape(resources["charge"]["billing_details"], ("address", "email", "name", "phone"))
    intent = dict(resources["payment_intent"])
    intent.update(  # the fixture's placeholders for a card payment that needs no further action
        amount_capturable=0,
        amount_details={"tip": {}},
        canceled_at=None,
        cancellation_reason=None,
        next_action=None,
        payment_method_configuration_details=None,
        processing=None,
        shipping=None,
        transfer_data=None,
        source=None,
    )
    refund = dict(resources["refund"])
    refund.update(destination_details={"card": {"type": "refund"}, "type": "card"}, status="succeeded")
    return {
        "payment_intent": JsonShape(
            intent,
            (
                "amount",
                "amount_received",
                "client_secret",
                "created",
                "currency",
                "customer",
                "description",
                "id",
                "last_payment_error",
                "latest_charge",
                "metadata",
                "payment_method",
                "receipt_email",
                "status",
            ),
        ),
        "refund": JsonShape(
            refund,
            (
                "amount",
                "balance_transaction",
                "charge",
                "created",
                "currency",
                "customer",
                "id",
                "metadata",
                "payment_intent",
                "payment_method",
                "reason",
            ),
        ),
        "customer": JsonShape(
            customer,
            (
                "address",
                "created",
                "currency",
                "description",
                "email",
                "id",
                "invoice_prefix",
                "metadata",
                "name",
                "phone",
                "preferred_locales",
            ),
        ),
        "charge": JsonShape(
            charge,
            (
                "amount",
                "amount_captured",
                "amount_refunded",
                "balance_transaction",
                "calculated_statement_descriptor",
                "captured",
                "created",
                "currency",
                "customer",
                "description",
                "failure_code",
                "failure_message",
                "id",
                "metadata",
                "outcome",
                "paid",
                "payment_intent",
                "payment_method",
                "receipt_email",
                "receipt_url",
                "refunded",
                "refunds",
                "status",
            ),
            nested={
                "billing_details": billing_shape,
                "payment_method_details": JsonShape(
                    {"card": card, "type": "card"}, (), nested={"card": card_shape}
                ),
            },
        ),
    }


def _address(index: int) -> dict[str, Any]:
    line1, city, state, postal_code, country = ADDRESSES[index]
    return {
        "city": city,
        "country": country,
        "line1": line1,
        "line2": None,
        "postal_code": postal_code,
        "state": state,
    }


_ADDRESS_JSON = tuple(RawJSON(encode(_address(i))) for i in range(len(ADDRESSES)))


def _derived_id(prefix: str, source_id: str) -> str:
    """A stable id for a related object (balance transaction, payment method) of a seeded record."""
    return prefix + source_id.partition("_")[2][::-1]


def _customer_fields(row: CustomerRow) -> dict[str, Any]:
    return {
        "address": _address(row.address) if row.address >= 0 else None,
        "created": row.created,
        "currency": row.currency,
        "description": row.description,
        "email": row.email,
        "id": row.id,
        "invoice_prefix": row.invoice_prefix,
        "metadata": {"member_no": f"M{row.member_no:06d}"},
        "name": row.name,
        "phone": row.phone,
        "preferred_locales": list(LOCALES[row.locales]),
    }


_OUTCOME_OK: dict[str, Any] = {
    "advice_code": None,
    "network_advice_code": None,
    "network_decline_code": None,
    "network_status": "approved_by_network",
    "reason": None,
    "seller_message": "Payment complete.",
    "type": "authorized",
}
_OUTCOME_DECLINED: dict[str, Any] = {
    **_OUTCOME_OK,
    "network_status": "declined_by_network",
    "reason": "generic_decline",
    "seller_message": "The bank did not return any further details with this decline.",
    "type": "issuer_declined",
}
_OUTCOME_OK_JSON, _OUTCOME_DECLINED_JSON = RawJSON(encode(_OUTCOME_OK)), RawJSON(encode(_OUTCOME_DECLINED))


def _charge_fields(row: ChargeRow) -> dict[str, Any]:
    brand, last4, country, funding = CARDS[row.card]
    succeeded, failed = row.status == "succeeded", row.status == "failed"
    failure_code, failure_message = FAILURES[row.order_no % len(FAILURES)] if failed else (None, None)
    suffix = row.id[3:]
    return {
        "amount": row.amount,
        "amount_captured": row.amount if succeeded else 0,
        "amount_refunded": row.refund_amount,
        "balance_transaction": _derived_id("txn_", row.id) if succeeded else None,
        "billing_details": {
            "address": _ADDRESS_JSON[row.address],
            "email": row.email,
            "name": row.name,
            "phone": row.phone,
        },
        "calculated_statement_descriptor": "ESM CLUB" if succeeded else None,
        "captured": not failed,
        "created": row.created,
        "currency": row.currency,
        "customer": row.customer,
        "description": CHARGE_DESCRIPTIONS[row.description],
        "failure_code": failure_code,
        "failure_message": failure_message,
        "id": row.id,
        "metadata": RawJSON(f'{{"order_id": "ORD-{row.order_no:07d}"}}'),
        "outcome": _OUTCOME_DECLINED_JSON if failed else _OUTCOME_OK_JSON,
        "paid": succeeded,
        "payment_intent": row.payment_intent,
        "payment_method": _derived_id("pm_", row.id),
        "payment_method_details": {
            "card": {
                "brand": brand,
                "country": country,
                "exp_month": 1 + row.order_no % 12,
                "exp_year": 2027 + row.order_no % 5,
                "fingerprint": suffix[:16],
                "funding": funding,
                "last4": last4,
                "network": brand,
                "overcapture": RawJSON(
                    f'{{"maximum_amount_capturable": {row.amount}, "status": "unavailable"}}'
                ),
            }
        },
        "receipt_email": row.email if succeeded else None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{suffix}" if succeeded else None,
        "refunded": row.refund_amount == row.amount,
        "refunds": RawJSON(  # ids are alphanumeric: safe inside a JSON string as is
            f'{{"data": [{_refund_text(row) if row.refund_amount else ""}], "has_more": false, '
            f'"object": "list", "url": "/v1/charges/{row.id}/refunds"}}'
        ),
        "status": row.status,
    }


def customer_object(row: CustomerRow) -> dict[str, Any]:
    """The customer as Stripe serves it: the fixture's keys in the fixture's order (a fresh dict)."""
    return copy.deepcopy(_shapes()["customer"].obj(_customer_fields(row)))


def customer_json(row: CustomerRow) -> RawJSON:
    return RawJSON(_shapes()["customer"].text(_customer_fields(row)))


def charge_object(row: ChargeRow) -> dict[str, Any]:
    """The charge as Stripe serves it: the fixture's keys in the fixture's order (a fresh dict)."""
    return copy.deepcopy(_shapes()["charge"].obj(_charge_fields(row)))


def charge_json(row: ChargeRow) -> RawJSON:
    return RawJSON(_shapes()["charge"].text(_charge_fields(row)))


def _intent_fields(row: PaymentIntentRow) -> dict[str, Any]:
    charge = row.source
    succeeded, failed = charge.status == "succeeded", charge.status == "failed"
    error = None
    if failed:
        code, message = FAILURES[charge.order_no % len(FAILURES)]
        error = {"charge": charge.id, "code": code, "message": message, "type": "card_error"}
    return {
        "amount": charge.amount,
        "amount_received": charge.amount if succeeded else 0,
        "client_secret": f"{row.id}_secret_{charge.id[3:][:25]}",
        "created": row.created,
        "currency": charge.currency,
        "customer": charge.customer,
        "description": CHARGE_DESCRIPTIONS[charge.description],
        "id": row.id,
        "last_payment_error": error,
        "latest_charge": charge.id,
        "metadata": RawJSON(f'{{"order_id": "ORD-{charge.order_no:07d}"}}'),
        "payment_method": _derived_id("pm_", charge.id),
        "receipt_email": charge.email if succeeded else None,
        "status": INTENT_STATUSES[charge.status],
    }


def payment_intent_object(row: PaymentIntentRow) -> dict[str, Any]:
    """The charge's PaymentIntent as Stripe serves it (the fixture's keys, in its order)."""
    return copy.deepcopy(_shapes()["payment_intent"].obj(_intent_fields(row)))


def payment_intent_json(row: PaymentIntentRow) -> RawJSON:
    return RawJSON(_shapes()["payment_intent"].text(_intent_fields(row)))


def _refund_fields(charge: ChargeRow) -> dict[str, Any]:
    refund_id = _derived_id("re_", charge.id)
    return {
        "amount": charge.refund_amount,
        "balance_transaction": _derived_id("txn_", refund_id),
        "charge": charge.id,
        "created": charge.refund_created,
        "currency": charge.currency,
        "customer": charge.customer,
        "id": refund_id,
        "metadata": {},
        "payment_intent": charge.payment_intent,
        "payment_method": _derived_id("pm_", charge.id),
        "reason": REFUND_REASONS[charge.refund_reason],
    }


def _refund_text(charge: ChargeRow) -> str:
    return _shapes()["refund"].text(_refund_fields(charge))


def refund_object(row: RefundRow) -> dict[str, Any]:
    """The refund of a seeded charge as Stripe serves it (the fixture's keys, in its order)."""
    return copy.deepcopy(_shapes()["refund"].obj(_refund_fields(row.source)))


def refund_json(row: RefundRow) -> RawJSON:
    return RawJSON(_refund_text(row.source))


def _event_head(row: EventRow, api_version: str) -> dict[str, Any]:
    return {
        "api_version": api_version,
        "created": row.created,
        "data": None,
        "id": row.id,
        "livemode": False,
        "object": "event",
        "pending_webhooks": 0,
        "request": {"id": row.request_id, "idempotency_key": row.idempotency_key},
        "type": row.type,
    }


def event_object(row: EventRow, api_version: str) -> dict[str, Any]:
    if row.kind == "customer":
        obj = customer_object(row.obj)
    elif row.kind == "charge":
        obj = charge_object(row.obj)
    else:
        obj = copy.deepcopy(row.obj)
    data: dict[str, Any] = {"object": obj}
    if row.previous_attributes is not None:
        data["previous_attributes"] = copy.deepcopy(row.previous_attributes)
    event = _event_head(row, api_version)
    event["data"] = data
    return event


def event_json(row: EventRow, api_version: str) -> RawJSON:
    if row.kind == "customer":
        obj = customer_json(row.obj)
    elif row.kind == "charge":
        obj = charge_json(row.obj)
    else:
        obj = RawJSON(encode(row.obj))
    data: dict[str, Any] = {"object": obj}
    if row.previous_attributes is not None:
        data["previous_attributes"] = row.previous_attributes
    event = _event_head(row, api_version)
    event["data"] = RawJSON("{" + ", ".join(f"{encode(k)}: {encode(v)}" for k, v in data.items()) + "}")
    return RawJSON("{" + ", ".join(f"{encode(k)}: {encode(v)}" for k, v in event.items()) + "}")
