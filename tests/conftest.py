"""Fixtures shared by the test modules."""

import contextlib
import os
import signal

import pytest

from tinyalex.data.synthetic import write_cifar_batches


@pytest.fixture
def no_hang():
    """`with no_hang(seconds): ...` fails the test instead of hanging when the block takes
    longer (opening a FIFO, for one, blocks until a writer comes)."""
    @contextlib.contextmanager
    def limit(seconds):
        def expire(signum, frame):
            raise AssertionError(f"still running after {seconds} s: it hangs")
        previous = signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    return limit


@pytest.fixture
def unwritable_dir(tmp_path):
    """An existing directory this process cannot create files in: a read-only directory
    (chmod 555), or, for root, who may write anywhere, /sys/kernel."""
    if os.geteuid() != 0:
        path = tmp_path / "read-only"
        path.mkdir()
        path.chmod(0o555)
        yield str(path)
        path.chmod(0o755)
        return
    path = "/sys/kernel"
    try:
        with open(os.path.join(path, "tinyalex-probe"), "w"):
            pass
    except OSError:
        yield path
        return
    os.unlink(os.path.join(path, "tinyalex-probe"))
    pytest.skip("no directory here is read-only for root")


@pytest.fixture
def torch():
    """PyTorch, the oracle of the tests that compare with it (skipped where it is missing;
    the others run without it)."""
    return pytest.importorskip("torch")


@pytest.fixture
def work_sharing(monkeypatch):
    """`work_sharing(threads)`: the fast route on `threads` threads, every kernel, product and
    convolution cut into as many pieces as it has rows (the smallest pieces there are), so that
    tests on small arrays exercise the hand-out of layers/fast/threads.py; on one thread, whole
    (small_pieces=True: the same small pieces, run one after the other)."""
    from layers.fast import conv, gemm, kernels, threads, winograd

    def configure(n, small_pieces=None):
        monkeypatch.setattr(threads, "_threads", n)
        many = n > 1 if small_pieces is None else small_pieces
        monkeypatch.setattr(kernels, "PIECE_WORK", 1 if many else 2**62)
        monkeypatch.setattr(gemm, "PIECE_FLOPS", 1 if many else 2**62)
        monkeypatch.setattr(gemm, "MIN_SIDE", 1)
        monkeypatch.setattr(conv, "PIECE_COLS_BYTES", 1 if many else 2**62)
        monkeypatch.setattr(winograd, "PIECE_BYTES", 1 if many else 2**62)
    return configure


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A CIFAR-10 directory of 120 synthetic training and 20 test images (the runs' data)."""
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_batches(str(root / "cifar-10-batches-py"), per_batch=24, n_test=20)   # 120 train
    return str(root)


@pytest.fixture
def drawn_texts(monkeypatch):
    """drawn_texts(): from then on, every text a picture draws (they all go through
    pictures.draw_text) is appended to the list it returns."""
    import tinyalex.pictures as pictures

    def start():
        texts, real = [], pictures.draw_text

        def spy(draw, xy, text, **options):
            texts.append(text)
            real(draw, xy, text, **options)
        monkeypatch.setattr(pictures, "draw_text", spy)
        return texts
    return start
