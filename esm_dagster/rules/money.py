"""Money amounts: Decimal, scaled by the currency's ISO 4217 exponent when sent in minor units.

A money field's currency comes from another field of the record (``currency_from``, Stripe's
lowercase ``currency``), else from the field's fixed ``currency``, else from
``transformations.currency``. Codes are case-insensitive; an unknown one rejects the record,
since storing an amount whose scale is unknown is how a 100x error gets in.

With ``minor_units`` the provider's integer is divided by ``10 ** exponent`` with
`Decimal.scaleb`, which is exact: 1999 USD -> 19.99, 5000 JPY -> 5000, 1234 KWD -> 1.234.
A fractional minor-unit amount is refused rather than rounded.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from esm_dagster.rules import currencies
from esm_dagster.rules.conversion import Invalid, show
from esm_dagster.rules.scalars import to_decimal


def _code(raw: Any) -> str | Invalid | None:
    if raw is None or raw == "":
        return None
    code = currencies.normalize_code(raw)
    if code is None:
        return Invalid("currency", f"{show(raw)} is not an ISO 4217 currency code")
    return code


def convert_money(
    values: list[Any],
    codes: list[Any] | None,
    fixed_currency: str | None,
    minor_units: str | None,
    currency_path: str | None = None,
) -> tuple[list[Any], list[Any]]:
    """Convert amounts; return (amounts, currency markers).

    `amounts` holds Decimal / None / `Invalid` per row. `currency markers` holds an `Invalid`
    for rows whose currency code (read from `codes`, the ``currency_from`` column) is unknown or
    missing when needed, else None; the caller reports those against the ``currency_from`` path.
    """
    n = len(values)
    amounts: list[Any] = [to_decimal(v) for v in values]
    marks: list[Any] = [None] * n
    if codes is not None:
        distinct: dict[Any, Any] = {}
        row_codes: list[Any] = []
        for raw in codes:
            if raw.__class__ is str or raw is None:
                if raw not in distinct:
                    distinct[raw] = _code(raw)
                row_codes.append(distinct[raw])
            else:
                row_codes.append(Invalid("currency", f"{show(raw)} is not an ISO 4217 currency code"))
        for i, code in enumerate(row_codes):
            if code.__class__ is Invalid:
                marks[i] = code
                row_codes[i] = None
            elif code is None and amounts[i] is not None:
                if fixed_currency is None:
                    marks[i] = Invalid(
                        "currency", f"no currency code at {currency_path!r} for amount {show(values[i])}"
                    )
                else:
                    row_codes[i] = fixed_currency
    else:
        row_codes = [fixed_currency] * n
    if minor_units is None:
        return amounts, marks
    convention: currencies.MinorUnitConvention = "stripe" if minor_units == "stripe" else "iso4217"
    scale_cache: dict[str, int | None] = {}
    for i, amount in enumerate(amounts):
        code = row_codes[i]
        if amount is None or amount.__class__ is Invalid or code is None or marks[i] is not None:
            continue
        if code not in scale_cache:
            scale_cache[code] = currencies.exponent(code, convention)
        exp = scale_cache[code]
        if exp is None:
            marks[i] = Invalid("currency", f"{code} has no minor unit; cannot convert {show(values[i])}")
            continue
        whole = amount.to_integral_value()
        if amount != whole:
            amounts[i] = Invalid("type", f"{show(values[i])} is not a whole number of {code} minor units")
            continue
        amounts[i] = Decimal(int(whole)).scaleb(-exp)
    return amounts, marks
