"""Garbage in reference cycles does not outlive a burst, even when the process goes idle."""

from __future__ import annotations

import asyncio
import gc
import platform
import sys
import weakref

import pytest

from {{ cookiecutter.package_name }}.lifecycle.collector import YOUNG_THRESHOLD, GarbageCollector


class Node:
    """An object in a reference cycle, as a rejected request's exception and frames are."""

    def __init__(self) -> None:
        self.cycle = self
        self.payload = bytearray(1 << 20)


async def test_cycles_are_collected_while_idle() -> None:
    thresholds = gc.get_threshold()
    try:
        async with GarbageCollector(interval=0.1).running():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            node = Node()
            garbage = weakref.ref(node)
            del node
            # Nothing allocates meanwhile: only the periodic collection can free it.
            for _ in range(40):
                if garbage() is None:
                    break
                await asyncio.sleep(0.05)
            assert garbage() is None
    finally:
        gc.set_threshold(*thresholds)


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_memory_is_handed_back_to_glibc() -> None:
    assert GarbageCollector()._trim is not None
