"""The sync's GC setting is the process's own again afterwards, however syncs nest or end."""

from __future__ import annotations

import gc
import threading

import pytest

from esm_dagster.sync.gc_tuning import YOUNG_THRESHOLD, fewer_collections


def test_tuned_inside_restored_after() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        assert gc.get_freeze_count() > 0
        assert gc.isenabled()  # collections still run, only less often
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_restored_when_the_sync_fails() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("sync failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_overlapping_syncs_restore_only_when_the_last_ends() -> None:
    before = gc.get_threshold()
    first_in, second_done = threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def other() -> None:
        first_in.wait(5)
        with fewer_collections():
            pass
        seen.append(gc.get_threshold())
        second_done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with fewer_collections():
        first_in.set()
        assert second_done.wait(5)
        assert seen == [gc.get_threshold()] and seen[0] != before  # still tuned for this sync
    thread.join()
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_sync_leaves_cyclic_garbage_collectable() -> None:
    """Objects made into cycles during the sync are still collected by the collector's passes."""
    import weakref

    class Node:
        pass

    with fewer_collections():
        node = Node()
        node.self = node  # type: ignore[attr-defined]
        ref = weakref.ref(node)
        del node
        gc.collect()
        assert ref() is None


def test_a_host_that_froze_its_objects_keeps_them_frozen() -> None:
    gc.freeze()
    try:
        with fewer_collections():
            pass
        assert gc.get_freeze_count() > 0  # not unfrozen by the sync (the count itself moves as objects die)
    finally:
        gc.unfreeze()
