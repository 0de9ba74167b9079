"""Date formats as written in mapping rules, turned into strict `strptime` patterns.

Rules come from people who write ``YYYY-MM-DD`` (moment / dayjs tokens) as often as
``%Y-%m-%d``. Both are accepted and normalised to a strftime pattern once, when the rules are
parsed. Token style is deliberately small and case-sensitive (``MM`` month, ``mm`` minute) so a
Java-style ``yyyy-mm-dd`` is refused at configuration time instead of silently reading minutes
as months.
"""

from __future__ import annotations

from datetime import datetime

DEFAULT_DATE_FORMAT = "%Y-%m-%d"

# Longest first, so "YYYY" wins over "YY".
_TOKENS: tuple[tuple[str, str], ...] = (
    ("YYYY", "%Y"),
    ("SSS", "%f"),
    ("YY", "%y"),
    ("MM", "%m"),
    ("DD", "%d"),
    ("HH", "%H"),
    ("mm", "%M"),
    ("ss", "%S"),
)
_BARE_LITERAL_LETTERS = frozenset("T")
_PROBE = datetime(2026, 12, 31, 23, 59, 58)  # every field distinct and two-digit


def to_strftime(fmt: str) -> str:
    """Translate a date format (token or strftime style) into a strftime pattern.

    Raises ValueError with a readable reason for an unknown token or directive, or for a
    format that cannot identify a calendar date (no year, month or day).
    """
    if not isinstance(fmt, str) or not fmt.strip():
        raise ValueError(f"{fmt!r} is not a date format")
    pattern = fmt if "%" in fmt else _translate_tokens(fmt)
    try:
        rendered = _PROBE.strftime(pattern)
        parsed = datetime.strptime(rendered, pattern)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{fmt!r} is not a valid date format ({exc})") from None
    if parsed.date() != _PROBE.date():
        raise ValueError(f"{fmt!r} does not contain a full date (year, month and day)")
    return pattern


def _translate_tokens(fmt: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(fmt):
        ch = fmt[i]
        if ch == "[":  # moment-style escaped literal: [T]
            end = fmt.find("]", i)
            if end < 0:
                raise ValueError(f"{fmt!r}: unterminated '[' literal")
            out.append(fmt[i + 1 : end].replace("%", "%%"))
            i = end + 1
            continue
        for token, directive in _TOKENS:
            if fmt.startswith(token, i):
                out.append(directive)
                i += len(token)
                break
        else:
            if ch.isalpha() and ch not in _BARE_LITERAL_LETTERS:
                raise ValueError(
                    f"{fmt!r}: unknown token at {fmt[i:]!r} (use YYYY, YY, MM, DD, HH, mm, ss, SSS "
                    "or a strftime pattern such as %Y-%m-%d)"
                )
            out.append("%%" if ch == "%" else ch)
            i += 1
    return "".join(out)
