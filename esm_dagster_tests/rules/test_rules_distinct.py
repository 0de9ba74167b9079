"""The per-value libraries run once per distinct value, not once per record."""

from __future__ import annotations

from esm_dagster.rules import compile_rules, emails, phones
from esm_dagster_tests.rules.rules_fixtures import seed

RECORDS = 200_000
DISTINCT_EMAILS = 500
DISTINCT_PHONES = 300


def test_phone_and_email_libraries_called_once_per_distinct_value() -> None:
    # Plain addresses (local part by pattern, domain by the library once) and UTF-8 local parts,
    # which go to the library whole.
    email_pool = [
        f"member{i}+club@example.org" if i % 2 else f"mémber{i}@example.org"
        for i in range(DISTINCT_EMAILS - 1)
    ] + ["broken"]
    library_emails = sum(1 for e in email_pool if not e.startswith("member"))
    # Half plain national numbers (decided from the metadata, never by the library), half written
    # without "+" after the calling code, which only the library can read.
    phone_pool = [
        f"08{1 + i % 9}-{100 + i:03d}-{1000 + i:04d}"
        if i % 2
        else f"66 8{1 + i % 9} {100 + i:03d} {1000 + i:04d}"
        for i in range(DISTINCT_PHONES)
    ]
    records = [
        {
            "id": f"{i:07d}",
            "email": email_pool[i % DISTINCT_EMAILS],
            "name": "Member",
            "phone": phone_pool[i % DISTINCT_PHONES],
            "created": 1700000000 + i,
        }
        for i in range(RECORDS)
    ]
    plan = compile_rules(seed())
    emails.normalize_email.cache_clear()
    emails._domain.cache_clear()
    phones.normalize_phone.cache_clear()
    phones._parse.cache_clear()

    result = plan.apply(records)

    assert emails.normalize_email.cache_info().misses == library_emails
    assert emails._domain.cache_info().misses == 1  # example.org, once
    assert phones.normalize_phone.cache_info().misses == DISTINCT_PHONES // 2
    assert phones._parse.cache_info().misses == DISTINCT_PHONES // 2  # library calls
    assert set(result.tables["user"]["phone_number"]) == {phones.library_phone(p, "TH") for p in phone_pool}
    # Deduplication happens before the cache: the library functions were not even asked twice.
    assert emails.normalize_email.cache_info().hits == 0
    assert phones.normalize_phone.cache_info().hits == 0
    assert result.rejected_count == RECORDS // DISTINCT_EMAILS  # every record with "broken"
    assert result.accepted_count == RECORDS - result.rejected_count

    # A second batch with the same values is served from the cache: no new library calls.
    plan.apply(records[:1000], start_index=RECORDS)
    assert emails.normalize_email.cache_info().misses == library_emails
    assert phones._parse.cache_info().misses == DISTINCT_PHONES // 2
