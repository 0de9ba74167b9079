"""ISO 4217 currency codes and their minor-unit exponents.

Money is where integrations go wrong by a factor of 100: Stripe sends `amount=5000,
currency="jpy"` meaning 5000 yen, `amount=1999, currency="usd"` meaning 19.99 dollars and
`amount=1234, currency="kwd"` meaning 1.234 dinars. Dividing by a hard-coded 100 is wrong for
about thirty currencies, so the exponent always comes from this table.

The table is ISO 4217 (list one, current codes, plus a few codes withdrawn recently enough to
appear in historical data). Codes with no minor unit in ISO 4217 (precious metals, SDR, test
code) are known but have exponent ``None``: an amount in minor units cannot be converted for
them.

Some providers deviate from ISO 4217 in their APIs. Stripe treats MGA as zero-decimal (ISO: 2)
and, for backwards compatibility, still expects ISK amounts in two-decimal form (ISO: 0), so
`STRIPE_EXPONENT_OVERRIDES` records those; a money field opts in with
``"minor_units": "stripe"``.
"""

from __future__ import annotations

from typing import Final, Literal

MinorUnitConvention = Literal["iso4217", "stripe"]

# code -> number of digits after the decimal point (None: ISO 4217 "N.A.")
ISO_4217_EXPONENTS: Final[dict[str, int | None]] = {
    "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2,
    "AWG": 2, "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BHD": 3, "BIF": 0,
    "BMD": 2, "BND": 2, "BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2,
    "BYN": 2, "BZD": 2, "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CLF": 4,
    "CLP": 0, "CNY": 2, "COP": 2, "COU": 2, "CRC": 2, "CUP": 2, "CVE": 2, "CZK": 2,
    "DJF": 0, "DKK": 2, "DOP": 2, "DZD": 2, "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2,
    "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2, "GHS": 2, "GIP": 2, "GMD": 2, "GNF": 0,
    "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2, "HUF": 2, "IDR": 2, "ILS": 2,
    "INR": 2, "IQD": 3, "IRR": 2, "ISK": 0, "JMD": 2, "JOD": 3, "JPY": 0, "KES": 2,
    "KGS": 2, "KHR": 2, "KMF": 0, "KPW": 2, "KRW": 0, "KWD": 3, "KYD": 2, "KZT": 2,
    "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2, "LSL": 2, "LYD": 3, "MAD": 2, "MDL": 2,
    "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2, "MRU": 2, "MUR": 2, "MVR": 2,
    "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2, "NAD": 2, "NGN": 2, "NIO": 2,
    "NOK": 2, "NPR": 2, "NZD": 2, "OMR": 3, "PAB": 2, "PEN": 2, "PGK": 2, "PHP": 2,
    "PKR": 2, "PLN": 2, "PYG": 0, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2, "RWF": 0,
    "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2,
    "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2, "THB": 2,
    "TJS": 2, "TMT": 2, "TND": 3, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2,
    "UAH": 2, "UGX": 0, "USD": 2, "USN": 2, "UYI": 0, "UYU": 2, "UYW": 4, "UZS": 2,
    "VED": 2, "VES": 2, "VND": 0, "VUV": 0, "WST": 2, "XAF": 0, "XCD": 2, "XCG": 2,
    "XOF": 0, "XPF": 0, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2,
    # Withdrawn recently; still present in historical provider data.
    "CUC": 2, "HRK": 2, "SLL": 2, "ZWL": 2, "VEF": 2, "MRO": 2, "STD": 2, "BYR": 0,
    # No minor unit (ISO 4217 "N.A."): bullion, SDR, bond-market units, test and "no currency".
    "XAG": None, "XAU": None, "XBA": None, "XBB": None, "XBC": None, "XBD": None,
    "XDR": None, "XPD": None, "XPT": None, "XSU": None, "XTS": None, "XUA": None,
    "XXX": None,
}  # fmt: skip

# Where Stripe's API amounts differ from ISO 4217 (docs.stripe.com/currencies#special-cases).
STRIPE_EXPONENT_OVERRIDES: Final[dict[str, int]] = {"MGA": 0, "ISK": 2}

ZERO_DECIMAL: Final[frozenset[str]] = frozenset(c for c, e in ISO_4217_EXPONENTS.items() if e == 0)
THREE_DECIMAL: Final[frozenset[str]] = frozenset(c for c, e in ISO_4217_EXPONENTS.items() if e == 3)


def normalize_code(code: object) -> str | None:
    """Upper-case, stripped ISO code if `code` is a known one, else None.

    Codes are compared case-insensitively because Stripe sends them in lower case.
    """
    if not isinstance(code, str):
        return None
    norm = code.strip().upper()
    return norm if norm in ISO_4217_EXPONENTS else None


def is_known(code: object) -> bool:
    return normalize_code(code) is not None


def exponent(code: str, convention: MinorUnitConvention = "iso4217") -> int | None:
    """Minor-unit exponent of a known (normalised) code under the given convention.

    Raises KeyError for an unknown code; returns None where the currency has no minor unit.
    """
    if convention == "stripe" and code in STRIPE_EXPONENT_OVERRIDES:
        return STRIPE_EXPONENT_OVERRIDES[code]
    return ISO_4217_EXPONENTS[code]
