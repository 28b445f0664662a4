"""The fast route's work sharing (layers/fast/threads.py, gemm.py): every piece runs exactly
once, a thread that is held up (as on a busy machine) only costs its current piece, and the
answers are the same bits on one thread, on several, and with a worker deliberately delayed:
every kernel, every product, every layer, and a whole training step."""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import layers.fast
from layers import reference
from layers.fast import conv, gemm, kernels, threads
from tinyalex.model import build_model


def test_share_runs_every_piece_once_on_several_threads(work_sharing):
    work_sharing(3)
    seen, names = [], set()

    def run(i):
        time.sleep(0.001)
        names.add(threading.current_thread().name)
        seen.append(i)
    threads.share(run, 40)
    assert sorted(seen) == list(range(40))
    assert len(names) > 1                        # the workers took pieces too


def test_a_held_up_worker_costs_only_its_piece(work_sharing):
    # One worker sleeps 0.3 s in its first piece; the calling thread and the other worker take
    # every other piece meanwhile, so share() ends about when that one piece does, not after a
    # third of the work has waited for the sleeper.
    work_sharing(3)
    who, sleeping = {}, threading.Event()

    def run(i):
        if threading.current_thread() is not threading.main_thread() and not sleeping.is_set():
            sleeping.set()
            time.sleep(0.3)
        else:
            time.sleep(0.005)
        who[i] = threading.current_thread().name
    start = time.perf_counter()
    threads.share(run, 60)
    assert sorted(who) == list(range(60))
    by_thread = {name: sum(1 for n in who.values() if n == name) for name in set(who.values())}
    assert min(by_thread.values()) == 1                  # the sleeper ran one piece
    assert by_thread[threading.main_thread().name] >= 20  # the caller kept taking pieces
    assert time.perf_counter() - start < 0.3 + 60 * 0.005


def test_an_error_in_a_piece_reaches_the_caller(work_sharing):
    work_sharing(2)

    def run(i):
        if i == 7:
            raise ValueError("piece 7")
    with pytest.raises(ValueError, match="piece 7"):
        threads.share(run, 20)
    threads.share(lambda i: None, 20)            # and the pool still works


def test_pieces_inside_a_piece_run_on_that_thread(work_sharing):
    work_sharing(3)
    inner = []

    def run(i):
        me = threading.get_ident()
        threads.share(lambda j: inner.append(threading.get_ident() == me), 5)
    threads.share(run, 4)
    assert len(inner) == 20 and all(inner)


def test_blas_runs_on_one_thread_inside_and_gets_its_threads_back():
    if not threads.can_limit_blas():
        pytest.skip("this NumPy's BLAS has no thread setting tinyalex can find")
    setter, getter = threads._openblas()
    before = getter()
    with threads.single_threaded_blas():
        assert getter() == 1
        with threads.single_threaded_blas():     # nested (another thread's block): still one
            assert getter() == 1
        assert getter() == 1
    assert getter() == before


def _close(ours, ref):
    tol = 1e-5 if ours.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_cut_into_pieces_match_numpy(dtype, work_sharing):
    work_sharing(3)
    rng = np.random.default_rng(0)
    for m, k, n in ((7, 5, 300), (300, 4, 9), (50, 40, 50)):
        a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        _close(gemm.matmul(a, b, np.empty((m, n), dtype)), a @ b)
        _close(gemm.matmul(b.T, a.T, np.empty((n, m), dtype)), (a @ b).T)   # transposed views
    A, B = rng.standard_normal((3, 2, 4, 5)).astype(dtype), rng.standard_normal((3, 2, 5, 6)).astype(dtype)
    _close(gemm.batched(A, B, np.empty((3, 2, 4, 6), dtype)), A @ B)
    _close(gemm.batched(A, B, np.ones((3, 2, 4, 6), dtype), accumulate=True), 1 + A @ B)
    B2 = rng.standard_normal((3, 2, 5, 3)).astype(dtype)
    first, second = np.ones((3, 2, 4, 6), dtype), np.empty((3, 2, 4, 3), dtype)
    gemm.batched_together((A, B, first, True), (A, B2, second, False))
    _close(first, 1 + A @ B)
    _close(second, A @ B2)


def _kernel_results(rng_seed=3):
    """Every kernel of layers/fast/kernels.py on one input each."""
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((3, 5, 11, 9)).astype(np.float32)
    cols = kernels.im2col(x, 3, 3, 2, 1)
    out = {"im2col": cols.copy(),
           "col2im": kernels.col2im(cols, x.shape, 3, 3, 2, 1).copy()}
    pooled, argmax = kernels.maxpool(x, 3, 3, 2)
    out["maxpool"], out["argmax"] = pooled.copy(), argmax.copy()
    out["maxpool_grad"] = kernels.maxpool_grad(pooled, argmax, x.shape).copy()
    y, _ = kernels.lrn(x, 5, 2.0, 1e-4, 0.75)
    out["lrn"] = y.copy()
    out["lrn_grad"] = kernels.lrn_grad(y, x, 5, 2.0, 1e-4, 0.75).copy()
    mat = rng.standard_normal((5, 3 * 7)).astype(np.float32)
    nchw = np.empty((3, 5, 7), np.float32)
    kernels.mat_to_nchw(mat, np.arange(5, dtype=np.float32), True, nchw)
    out["mat_to_nchw"] = nchw.copy()
    back, sums = np.empty((5, 21), np.float32), np.empty((3, 5))
    kernels.nchw_to_mat(nchw, nchw, True, sums, back)
    out["nchw_to_mat"], out["sums"] = back.copy(), sums.copy()
    return out


def _layer_results():
    """Every fast layer forward and backward, the convolutions on both of their routes."""
    rng = np.random.default_rng(4)
    out = {}
    for name, (xs, ws, stride, pad, groups) in {
            "im2col conv": ((3, 3, 12, 12), (8, 3, 3, 3), 1, 1, 1),
            "strided conv": ((2, 3, 23, 23), (6, 3, 11, 11), 4, 2, 1),
            "winograd 3x3": ((3, 16, 9, 9), (8, 8, 3, 3), 1, 1, 2),
            "winograd 5x5": ((3, 16, 9, 9), (8, 16, 5, 5), 1, 2, 1),             # in pieces
            "winograd in chunks": ((2, 64, 5, 5), (8, 64, 3, 3), 1, 1, 1)}.items():   # 64 a group
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        b = rng.standard_normal(ws[0]).astype(np.float32)
        y, cache = layers.fast.conv_relu_forward(x, w, b, stride=stride, pad=pad, groups=groups)
        out[name] = [y.copy()] + [g.copy() for g in layers.fast.conv_backward(np.ones_like(y) + y, cache)]
    x = rng.standard_normal((6, 300)).astype(np.float32)
    w, b = rng.standard_normal((200, 300)).astype(np.float32), rng.standard_normal(200).astype(np.float32)
    y, cache = layers.fast.dense_forward(x, w, b)
    out["dense"] = [y.copy()] + [g.copy() for g in layers.fast.dense_backward(y, cache)]
    return out


def _training_step(model_name):
    """The loss and every gradient of one training step of a model, on the fast route."""
    model = build_model(model_name, 10, seed=0, route="fast")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4,) + model.arch.input_shape).astype(np.float32)
    y = rng.integers(0, 10, 4)
    result = model.loss(x, y, rng=np.random.default_rng(1))
    loss, grads = result.loss, result.grads
    return {"loss": np.array(loss), **{k: g.copy() for k, g in grads.items()}}


def _assert_same_bits(a, b):
    assert a.keys() == b.keys()
    for key in a:
        for u, v in zip(np.atleast_1d(a[key]) if not isinstance(a[key], list) else a[key],
                        np.atleast_1d(b[key]) if not isinstance(b[key], list) else b[key]):
            assert np.array_equal(u, v), key


@pytest.mark.parametrize("compute", [_kernel_results, _layer_results, lambda: _training_step("tiny")],
                         ids=["kernels", "layers", "training step"])
def test_the_same_bits_on_one_thread_on_three_and_with_a_delayed_worker(compute, work_sharing, monkeypatch):
    work_sharing(1, small_pieces=True)       # the same pieces, one after the other
    alone = compute()
    work_sharing(3)
    shared = compute()
    log = []
    share = threads.share
    main = threading.get_ident()

    def slow_share(run, pieces):
        # a worker sleeps before each piece it takes (a thread the machine runs late); the
        # calling thread waits (at most 2 s) for a worker to have taken one, so that the
        # delayed workers surely hold pieces
        worker_started = threading.Event()
        shared = pieces > 1 and threads.parallel_here()

        def delayed(i):
            if threading.get_ident() != main:
                worker_started.set()
                time.sleep(0.001)
            elif shared:
                worker_started.wait(2)
            log.append(threading.get_ident() == main)
            run(i)
        share(delayed, pieces)
    monkeypatch.setattr(threads, "share", slow_share)
    delayed = compute()
    assert log and any(log) and not all(log)    # pieces ran on both the caller and workers
    _assert_same_bits(alone, shared)
    _assert_same_bits(alone, delayed)


def test_a_cifar_step_is_the_same_bits_on_one_thread_and_two():
    # the real sizes and the real piece sizes (no patched constants): what training runs
    threads_before = threads.get_num_threads()
    try:
        threads.set_num_threads(1)
        alone = _training_step("cifar")
        threads.set_num_threads(2)
        shared = _training_step("cifar")
    finally:
        threads.set_num_threads(threads_before)
    _assert_same_bits(alone, shared)


def test_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        threads.set_num_threads(0)


@pytest.mark.parametrize("value, expected", [("3", "3"), ("abc", str(threads.available_cores())),
                                             ("", str(threads.available_cores()))])
def test_thread_count_defaults_to_numba_num_threads(value, expected):
    # NUMBA_NUM_THREADS (what --threads sets before the import) picks the thread count; a value
    # that is not a number falls back to the cores (the entry points report it as an error)
    code = "from layers.fast import threads; print(threads.get_num_threads())"
    env = dict(os.environ, NUMBA_NUM_THREADS=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == expected, out.stderr
