import threading

import pytest

from esm_dagster.sync.prefetch import prefetched


def test_keeps_order_and_everything() -> None:
    assert list(prefetched(iter(range(1000)), depth=3)) == list(range(1000))


def test_producer_error_reaches_consumer_after_the_items_before_it() -> None:
    def items():
        yield 1
        yield 2
        raise RuntimeError("page 3 failed")

    seen = []
    with pytest.raises(RuntimeError, match="page 3 failed"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_consumer_stopping_early_stops_the_producer() -> None:
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    gen = prefetched(items(), depth=2)
    assert next(gen) == 0
    gen.close()
    assert len(produced) <= 5
    assert not [t for t in threading.enumerate() if t.name == "esm-prefetch"]
