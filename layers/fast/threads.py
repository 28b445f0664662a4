"""How the fast route shares its work between threads, so that a busy machine slows it down
only by the share of the cores it loses.

Every parallel piece of the fast route (a Numba kernel's outer loop, a matrix product, a
pipeline over chunks of images) is cut into `pieces` numbered 0..pieces-1 that write disjoint
parts of the output, and handed to `share(run, pieces)`:

    share(run, pieces)      run(0), ..., run(pieces - 1), on this thread and the pool's

The pieces are dealt out from one counter: the calling thread and `get_num_threads() - 1`
workers each take the next number, run that piece, and come back for another, until none is
left. A thread that the operating system does not schedule for a while (another program
wants the core) takes fewer pieces, and the others take the rest: it holds the work up by at
most the piece it is running, where a fixed split into one slice per thread would wait for
its whole slice. On an idle machine the threads take about equal shares.

How an array is cut into pieces is decided by its size alone, never by the thread count or by
which thread runs a piece, so the results are the same bits on one thread or several, idle or
busy (tests/test_threads.py holds every kernel to that, with a deliberately delayed worker).

Matrix products. OpenBLAS splits each product over its own threads, one slice per thread, and
its threads wait for each other: on a busy machine one descheduled BLAS thread stalls the
product. The fast route therefore cuts its large products into pieces itself (`gemm.py`) and
runs each piece on one BLAS thread: `single_threaded_blas()` sets OpenBLAS to one thread while
the pieces run (and back after), through OpenBLAS's own `openblas_set_num_threads`. Where
that function cannot be found (another BLAS), the products are not cut and BLAS keeps its
own threads: the same answers, but one descheduled BLAS thread stalls a whole product.

The workers are plain Python threads, started on first use; the pieces release the GIL
(Numba's `nogil=True`, NumPy's BLAS calls), and an idle worker sleeps on a queue. A worker
runs its pieces in a copy of the caller's context, so that the caller's `np.errstate` holds
in them too.
`set_num_threads(n)` sets the number of threads that take pieces (default: NUMBA_NUM_THREADS
when it is set, else the cores this process may use).
"""

import contextvars
import ctypes
import glob
import itertools
import os
import queue
import threading

from tinyalex._runtime import available_cores   # (the standard library only)

_local = threading.local()        # .inside: this thread is running a piece


def _threads_from_environment():
    value = os.environ.get("NUMBA_NUM_THREADS", "")
    try:
        return max(1, int(value)) if value.strip() else available_cores()
    except ValueError:            # not a number: the default (the entry points report it)
        return available_cores()


_threads = _threads_from_environment()


def set_num_threads(n):
    """Share each parallel piece of work between n threads (the calling one and n - 1 workers)."""
    global _threads
    if int(n) < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    _threads = int(n)


def get_num_threads():
    return _threads


class _Job:
    """One share(): pieces dealt out from a counter; `done` is set when the last one ends."""

    def __init__(self, run, pieces):
        self.run, self.pieces = run, pieces
        self.counter = itertools.count()    # next() on it is atomic: each number is taken once
        self.left = pieces
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None
        # the caller's context (NumPy's np.errstate lives there): the workers run in a copy
        self.context = contextvars.copy_context()

    def work(self):
        _local.inside = True
        try:
            while True:
                i = next(self.counter)
                if i >= self.pieces:
                    return
                try:
                    self.run(i)
                except BaseException as e:   # handed to the calling thread
                    self.error = self.error or e
                with self.lock:
                    self.left -= 1
                    if self.left == 0:
                        self.done.set()
        finally:
            _local.inside = False


_jobs = queue.SimpleQueue()
_workers = []
_workers_lock = threading.Lock()


def _worker():
    while True:
        job = _jobs.get()
        job.context.copy().run(job.work)


def _start_workers(n):
    with _workers_lock:
        while len(_workers) < n:
            t = threading.Thread(target=_worker, name=f"tinyalex-worker-{len(_workers)}", daemon=True)
            t.start()
            _workers.append(t)


def parallel_here():
    """Whether share() would use more than this thread: more than one thread is set, and this
    thread is not itself running a piece."""
    return _threads > 1 and not getattr(_local, "inside", False)


def share(run, pieces):
    """Run run(0) ... run(pieces - 1), shared between this thread and the workers (see the
    module docstring); returns when all have run. Serial on one thread, for one piece, and
    inside a piece (no nested sharing)."""
    helpers = min(_threads, pieces) - 1
    if helpers <= 0 or getattr(_local, "inside", False):
        for i in range(pieces):
            run(i)
        return
    _start_workers(helpers)
    job = _Job(run, pieces)
    for _ in range(helpers):
        _jobs.put(job)
    job.work()            # this thread takes pieces too, until none is left
    job.done.wait()       # then waits only for the pieces other threads are still running
    if job.error is not None:
        raise job.error


def share_blas_work(run, pieces):
    """share() for pieces that make matrix products: each runs them on one BLAS thread. Where
    BLAS's threads cannot be set, the pieces run one after the other on this thread instead,
    and each product gets BLAS's threads."""
    if not can_limit_blas():
        for i in range(pieces):
            run(i)
        return
    with single_threaded_blas():
        share(run, pieces)


def cuts(n, pieces):
    """pieces + 1 boundaries cutting range(n) into `pieces` near-equal consecutive parts."""
    return [n * t // pieces for t in range(pieces + 1)]


# ---------------------------------------------------------------------------------------------
# OpenBLAS's thread count

def _find_openblas_setter():
    """(set, get) for the thread count of the OpenBLAS that NumPy loaded, or None."""
    import numpy
    here = os.path.dirname(numpy.__file__)
    candidates = glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*"))
    try:
        with open("/proc/self/maps") as f:
            candidates += sorted({line.split()[-1] for line in f if "openblas" in line and "/" in line})
    except OSError:
        pass
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_"), ("", ""), ("scipy_", "")):
            setter = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}", None)
            getter = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}", None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = (ctypes.c_int,), None, ctypes.c_int
                return setter, getter
    return None


_blas = None
_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = None


def _openblas():
    global _blas
    if _blas is None:
        _blas = _find_openblas_setter() or False
    return _blas


def can_limit_blas():
    """Whether the BLAS's thread count can be set (NumPy's OpenBLAS): gemm.py cuts products
    only then."""
    return bool(_openblas())


class single_threaded_blas:
    """`with single_threaded_blas():` OpenBLAS runs every product on the thread that calls it;
    its own thread count comes back when the last such block (on any thread) ends."""

    def __enter__(self):
        global _blas_users, _blas_saved
        blas = _openblas()
        if blas:
            with _blas_lock:
                if _blas_users == 0:
                    _blas_saved = blas[1]()
                    blas[0](1)
                _blas_users += 1
        return self

    def __exit__(self, *exc):
        global _blas_users
        blas = _openblas()
        if blas:
            with _blas_lock:
                _blas_users -= 1
                if _blas_users == 0:
                    blas[0](_blas_saved)
        return False
