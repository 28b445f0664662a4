"""The pool behind the layers' large outputs hands a block out again only once nothing uses it."""

import numpy as np
import pytest

from layers.fast import buffers

MB = 2**20


@pytest.fixture(autouse=True)
def empty_pool():
    buffers.clear()
    yield
    buffers.clear()


def block_of(a):
    return id(a.base)


def test_small_arrays_are_plain_numpy():
    a = buffers.empty((10, 10), np.float32)
    assert a.base is None and a.shape == (10, 10) and a.dtype == np.float32
    assert buffers.pooled_bytes() == 0


def test_a_block_is_reused_once_free_and_never_while_in_use():
    a = buffers.empty((MB // 4,), np.float32)
    first = block_of(a)
    b = buffers.empty((MB // 4,), np.float32)      # a is alive: b needs a block of its own
    assert block_of(b) != first
    a[:] = 1.0
    b[:] = 2.0
    assert np.all(a == 1.0)                        # writing b did not touch a
    del a
    c = buffers.empty((256, 1024), np.float32)     # same size, other shape: a's block again
    assert block_of(c) == first and c.shape == (256, 1024)
    assert buffers.pooled_bytes() == 2 * MB


def test_a_view_or_a_cache_keeps_the_block_in_use():
    a = buffers.empty((MB // 4,), np.float32)
    first = block_of(a)
    view = a.reshape(512, 512)[::2]
    cache = (a.reshape(1024, 256),)
    del a
    assert block_of(buffers.empty((MB // 4,), np.float32)) != first
    del view
    assert block_of(buffers.empty((MB // 4,), np.float32)) != first   # cache still holds it
    del cache
    assert block_of(buffers.empty((MB // 4,), np.float32)) == first


def test_smaller_requests_reuse_a_block_at_most_twice_their_size():
    a = buffers.empty((4 * MB,), np.uint8)
    first = block_of(a)
    del a
    partial = buffers.empty((3 * MB,), np.uint8)   # a partial batch fits the full batch's block
    assert block_of(partial) == first
    del partial
    tiny = buffers.empty((MB,), np.uint8)          # 4x too large: a block of its own
    assert block_of(tiny) != first
    assert buffers.pooled_bytes() == 5 * MB


def test_the_smallest_free_block_that_fits_is_chosen():
    big = buffers.empty((6 * MB,), np.uint8)
    small = buffers.empty((4 * MB,), np.uint8)
    big_id, small_id = block_of(big), block_of(small)
    del big, small
    first = buffers.empty((3 * MB + 1,), np.uint8)
    second = buffers.empty((3 * MB + 1,), np.uint8)   # the small block is taken by first
    assert (block_of(first), block_of(second)) == (small_id, big_id)
