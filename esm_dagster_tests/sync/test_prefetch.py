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


def test_reads_a_write_batch_ahead_within_bounds() -> None:
    from esm_dagster.sync.prefetch import MAX_DEPTH, prefetch_depth

    assert prefetch_depth(1000, 100) == 10  # the demo's charges: a batch of ten pages
    assert prefetch_depth(100, 100) == 2 and prefetch_depth(1, 100) == 2
    assert prefetch_depth(10_000, 100) == MAX_DEPTH  # memory stays bounded however big the batch


def test_the_reader_runs_a_whole_depth_ahead_of_a_busy_consumer() -> None:
    """While the consumer works on one item the producer fills every slot (no stall after two)."""
    produced = []
    filled = threading.Event()

    def items():
        for i in range(100):
            produced.append(i)
            if len(produced) == 11:  # the consumer's item + ten waiting
                filled.set()
            yield i

    gen = prefetched(items(), depth=10)
    assert next(gen) == 0
    assert filled.wait(5), f"only {len(produced)} produced while the consumer was busy"
    assert list(gen) == list(range(1, 100))
