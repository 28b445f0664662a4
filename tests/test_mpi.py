"""tinyalex/mpi/: the paper's two towers and data parallelism, on real 2-rank MPI jobs on localhost.

The jobs start with `mpiexec -n 2` (MPICH from the [mpi] extra; the test extra installs it).
They are skipped, with the reason, only when mpi4py or mpiexec is not installed. The tests
that need no MPI (the plan of the towers, the one-line errors without MPI, the single-process
path never importing mpi4py) always run.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

from tinyalex.checkpoint import load_checkpoint
from tinyalex.errors import install_hint
from tinyalex.model import ARCHS, param_shapes
from tinyalex.mpi.data_parallel import BatchRowsGenerator, shard
from tinyalex.mpi.same_options import differences
from tinyalex.mpi.towers import FIGURE_2, own_rows, tower_plan
from tinyalex.trainer import Run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _find_mpiexec():
    beside = os.path.join(sysconfig.get_path("scripts"), "mpiexec")   # the mpich wheel's
    return beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")


MPIEXEC = _find_mpiexec()
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
needs_mpi = pytest.mark.skipif(not (MPIEXEC and HAVE_MPI4PY),
                               reason="mpi4py or mpiexec not installed (pip install -e '.[mpi]')")
LAUNCHER_VARIABLES = ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                      "PMIX_SIZE", "PMIX_RANK")


def environment(threads=None, **extra):
    """The test's environment for a child: this checkout first on the path, no launcher
    variables of an enclosing MPI job, and `threads` threads if given."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in [env.get("PYTHONPATH")] if p])
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    env.update(extra)
    return env


def mpiexec(n, args, timeout=180, **kw):
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, **kw)


def train_args(data, out, *extra):
    return ["--model", "tiny", "--data", data, "--data-dir", os.path.join(os.path.dirname(out), "cache"),
            "--val-size", "30", "--batch-size", "15", "--init", "torch", "--lr", "0.02",
            "--out", out, "--no-progress", *extra]


def single_process_run(data, out, epochs=2, stop=None, extra=()):
    """A Run in this process with train.py's options (stop: a predicate on its progress)."""
    from tinyalex.options import train_parser
    from tinyalex.trainer import write_config
    config = {k: v for k, v in vars(train_parser().parse_args(
        train_args(data, out, "--epochs", str(epochs), *extra))).items() if k != "resume"}
    os.makedirs(out, exist_ok=True)
    run = Run(config, out, log=lambda s: None)
    write_config(out, config)
    run.train(stop_requested=(lambda: stop(run.progress)) if stop else (lambda: False),
              show_progress=False)
    return run


def assert_same_weights(path, params, tol):
    ckpt = load_checkpoint(path, model_name="tiny")
    assert set(ckpt.params) == set(params)
    for name, value in params.items():
        assert ckpt.params[name].shape == value.shape, name                    # the whole model
        np.testing.assert_allclose(ckpt.params[name], value, rtol=0, atol=tol, err_msg=name)


# --- no MPI needed ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ARCHS))
def test_the_towers_cross_only_where_figure_2_joins_them(name):
    plan = tower_plan(ARCHS[name])
    assert tuple(n for n, kind, _ in plan if kind == "join") == FIGURE_2
    order = [n for n, _, _ in plan]
    for crossing in FIGURE_2:                     # right before the layer (or its dropout)
        after = order[order.index(crossing) + 1]
        assert after in (crossing[5:], "drop" + crossing[7:]), (crossing, after)
    assert all(opts["groups"] == 1 for _, kind, opts in plan if kind == "conv")
    assert [n for n, kind, _ in plan if kind == "lrn"] == ["lrn1", "lrn2"]   # the two halos
    assert plan[-1][1] == "logits"


def test_rows_shards_and_the_shard_generator():
    assert own_rows(96, 0) == slice(0, 48) and own_rows(96, 1) == slice(48, 96)
    assert own_rows(5, 0) == slice(0, 3) and own_rows(5, 1) == slice(3, 5)
    for n, size in ((128, 2), (7, 2), (2, 3), (100, 3)):
        bounds = [shard(n, r, size) for r in range(size)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    whole = np.random.default_rng(5)
    a, b = whole.random((7, 4), dtype=np.float32), whole.random((7, 3), dtype=np.float32)
    rows = BatchRowsGenerator(np.random.default_rng(5), 7, 2, 5)
    assert isinstance(rows, np.random.Generator)
    np.testing.assert_array_equal(rows.random((3, 4), dtype=np.float32), a[2:5])
    np.testing.assert_array_equal(rows.random((3, 3), dtype=np.float32), b[2:5])


@pytest.fixture
def no_mpi4py(tmp_path):
    """A directory whose `mpi4py` fails to import, as if it were not installed."""
    fake = tmp_path / "without-mpi" / "mpi4py"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'mpi4py'\")\n")
    return str(fake.parent)


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_without_mpi_towers_and_mpiexec_say_what_to_install(data, tmp_path, no_mpi4py):
    env = environment(PYTHONPATH=os.pathsep.join([no_mpi4py, ROOT]))
    train = [sys.executable, os.path.join(ROOT, "train.py")]
    towers = subprocess.run(train + train_args(data, str(tmp_path / "t"), "--towers", "2"),
                            capture_output=True, text=True, env=env, timeout=60)
    line = _one_error_line(towers)
    assert install_hint("mpi") in line and "mpiexec -n 2" in line
    # what mpiexec tells each process it starts (PMI_SIZE, PMI_RANK), without mpi4py
    launched = subprocess.run(train + train_args(data, str(tmp_path / "d")), capture_output=True,
                              text=True, env=dict(env, PMI_SIZE="2", PMI_RANK="0"), timeout=60)
    line = _one_error_line(launched)
    assert "mpiexec started 2 processes" in line and install_hint("mpi") in line
    assert not os.path.exists(tmp_path / "t") and not os.path.exists(tmp_path / "d")
    if MPIEXEC:   # and for real: two processes, one line
        proc = subprocess.run([MPIEXEC, "-n", "2", *train, *train_args(data, str(tmp_path / "m"))],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 2 and proc.stderr.count("error: ") == 1, proc.stderr


def test_the_single_process_path_never_imports_mpi4py(data, tmp_path, no_mpi4py):
    out = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *train_args(data, out, "--epochs", "1")],
                          capture_output=True, text=True, timeout=120,
                          env=environment(PYTHONPATH=os.pathsep.join([no_mpi4py, ROOT])))
    assert proc.returncode == 0, proc.stderr
    assert "MPI" not in proc.stdout and os.path.exists(os.path.join(out, "last.npz"))


# --- real MPI jobs ------------------------------------------------------------------------

@needs_mpi
def test_towers_and_data_parallel_compute_what_one_process_computes():
    """Two ranks (towers, data parallel) against one process, float64, a few SGD steps from the
    same weights on the same batches (one of 7 images: unequal shards), both routes; and the
    same with a piece deliberately broken, which the comparison must catch."""
    proc = mpiexec(2, [os.path.join(ROOT, "tests", "mpi_job.py"), "two"], env=environment(threads=1))
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    broken = {k: v for k, v in results.items() if k.startswith("broken")}
    assert len(broken) == 3 and len(results) == 8
    for case, r in results.items():
        if case in broken:
            assert r["weights"] > 1e-7, (case, r)                 # caught
        else:
            assert r["weights"] < 1e-10 and r["logits"] < 1e-10, (case, r)
        assert r["ranks_identical"], case


@needs_mpi
def test_data_parallel_on_three_ranks_with_an_empty_shard():
    proc = mpiexec(3, [os.path.join(ROOT, "tests", "mpi_job.py"), "three"], env=environment(threads=1))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])["dp tiny fast, 3 ranks"]
    assert r["weights"] < 1e-10 and r["logits"] < 1e-10 and r["ranks_identical"], r


@needs_mpi
def test_an_error_on_every_rank_is_one_line_and_on_one_rank_aborts_the_job():
    start = time.monotonic()
    proc = mpiexec(2, [os.path.join(ROOT, "tests", "mpi_job.py"), "fail"], env=environment(threads=1),
                   timeout=60)
    assert proc.stderr.count("error: every rank failed") == 1, proc.stderr
    assert "error: rank 1 failed alone (rank 1; the other ranks went on: aborting the job)" in proc.stderr
    assert proc.returncode != 0 and "not reached" not in proc.stdout
    assert time.monotonic() - start < 30


@pytest.fixture(scope="module")
def whole_run(data, tmp_path_factory):
    """Two epochs in one process, uninterrupted: the reference for the MPI runs."""
    out = str(tmp_path_factory.mktemp("whole") / "run")
    return single_process_run(data, out)


@needs_mpi
def test_towers_resume_a_single_process_run_and_write_its_checkpoints(data, tmp_path, whole_run):
    out = str(tmp_path / "run")
    # a single-process run stopped in its first epoch, continued on two towers
    single_process_run(data, out, stop=lambda p: p.batch == 3)
    proc = mpiexec(2, [os.path.join(ROOT, "train.py"), "--resume", out, "--towers", "2", "--no-progress"],
                   env=environment())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("resuming") == 1 and proc.stdout.count("epoch   2/2") == 1   # rank 0 alone
    assert "two towers" in proc.stdout and "MB sent" in proc.stdout
    assert_same_weights(os.path.join(out, "last.npz"), whole_run.model.params, 1e-5)
    # the towers' checkpoint is an ordinary one: evaluated on one process, same test accuracy
    ev = subprocess.run([sys.executable, "-m", "tinyalex", "evaluate", os.path.join(out, "last.npz"),
                         "--data", data, "--data-dir", os.path.join(tmp_path, "cache"), "--json"],
                        capture_output=True, text=True, cwd=ROOT, env=environment(), timeout=120)
    assert ev.returncode == 0, ev.stderr
    towers_test, report = json.load(open(os.path.join(out, "test.json"))), json.loads(ev.stdout)
    assert abs(report["top1"] - towers_test["test_top1_flip"]) < 1e-9          # flip TTA
    assert abs(report["centre"]["top1"] - towers_test["test_top1"]) < 1e-9    # the image alone


@needs_mpi
def test_towers_resume_a_run_that_averages_its_weights(data, tmp_path):
    """--ema on two towers: each keeps the average of its half, and the checkpoint joins them
    (param/ the average, train/ the trained weights) as one process writes it."""
    whole = single_process_run(data, str(tmp_path / "whole"), extra=("--ema", "0.9"))
    out = str(tmp_path / "run")
    single_process_run(data, out, stop=lambda p: p.batch == 3, extra=("--ema", "0.9"))
    proc = mpiexec(2, [os.path.join(ROOT, "train.py"), "--resume", out, "--towers", "2", "--no-progress"],
                   env=environment())
    assert proc.returncode == 0, proc.stderr
    last = os.path.join(out, "last.npz")
    assert_same_weights(last, whole.average.average, 1e-5)
    trained = load_checkpoint(last).trained
    for name, value in whole.model.params.items():
        np.testing.assert_allclose(trained[name], value, rtol=0, atol=1e-5, err_msg=name)
    assert not np.allclose(trained["fc6.w"], whole.average.average["fc6.w"], rtol=0, atol=1e-4)


@needs_mpi
def test_data_parallel_train_py_trains_what_one_process_trains(data, tmp_path, whole_run):
    out = str(tmp_path / "run")
    proc = mpiexec(2, [os.path.join(ROOT, "train.py"), *train_args(data, out, "--epochs", "2")],
                   env=environment())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("epoch   1/2") == 1 and "data parallel" in proc.stdout
    assert "1 thread each" in proc.stdout            # 2 cores / 2 ranks (CI's machines)
    for name in ("config.json", "metrics.csv", "last.npz", "best.npz", "test.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert_same_weights(os.path.join(out, "last.npz"), whole_run.model.params, 1e-5)
    rows = whole_run.progress.metrics
    got = load_checkpoint(os.path.join(out, "last.npz")).meta["metrics"]
    for mine, ref in zip(got, rows):
        assert abs(mine["train_loss"] - ref["train_loss"]) < 1e-4
        assert mine["val_acc"] == ref["val_acc"]


def _rank_pid(marker, rank):
    """The pid of the process of an MPI job (started with TINYALEX_TEST_JOB=marker) of this rank."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        ranks = {f"{var}={rank}".encode() for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")}
        if f"TINYALEX_TEST_JOB={marker}".encode() in env and ranks & set(env):
            return int(pid)
    return None


@needs_mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's process in /proc")
def test_sigterm_on_one_rank_stops_both_towers_with_one_checkpoint(data, tmp_path):
    out, marker = str(tmp_path / "run"), f"sigterm-{os.getpid()}"
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "train.py"),
                             *train_args(data, out, "--epochs", "12", "--towers", "2")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=environment(TINYALEX_TEST_JOB=marker))
    for line in proc.stdout:                     # training has started
        if line.startswith("model:"):
            break
    time.sleep(1.0)
    pid = _rank_pid(marker, 1)
    assert pid, "rank 1 not found"
    os.kill(pid, signal.SIGTERM)                 # rank 1 only: rank 0 must hear of it
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.count("interrupted: saved") == 1 and "Traceback" not in stderr, stderr
    ckpt = load_checkpoint(os.path.join(out, "last.npz"), model_name="tiny")
    assert 0 < ckpt.meta["epoch"] * 6 + ckpt.meta["batch"] < 12 * 6
    shapes = param_shapes(ARCHS["tiny"], 10)
    assert {k: v.shape for k, v in ckpt.params.items()} == shapes        # both towers' rows
    # ... and one process takes the run over (2 epochs more than it has done)
    done = ckpt.meta["epoch"]
    resumed = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--resume", out,
                              "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                             env=environment(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert len(load_checkpoint(os.path.join(out, "last.npz")).meta["metrics"]) == 12 > done


def test_the_options_that_differ_are_named_with_each_rank_s_value():
    given = [{"--seed": 0, "--nesterov": False}, {"--seed": 1}, {"--seed": 0, "--nesterov": False}]
    assert differences(given) == ("--nesterov off on ranks 0, 2, not given on rank 1; "
                                  "--seed 0 on ranks 0, 2, 1 on rank 1")
    assert differences([{"--lr": 0.01}, {"--lr": 0.01}]) == ""


@needs_mpi
@pytest.mark.parametrize("rank1, expected", [
    (["--seed", "1"], "--seed 0 on rank 0, 1 on rank 1"),           # trained with rank 0's seed
    (["--batch-size", "16"], "--batch-size 15 on rank 0, 16 on rank 1"),   # crashed in an exchange
])
def test_ranks_started_with_different_options_stop_with_one_line(data, tmp_path, rank1, expected):
    out = str(tmp_path / "run")
    rank = [sys.executable, os.path.join(ROOT, "train.py"),
            *train_args(data, out, "--epochs", "1", "--towers", "2", "--seed", "0")]
    proc = subprocess.run([MPIEXEC, "-n", "1", *rank, ":", "-n", "1", *rank, *rank1],
                          capture_output=True, text=True, cwd=ROOT, env=environment(threads=1),
                          timeout=120)
    line = _one_error_line(proc)
    assert "the ranks were started with different options: " + expected + ";" in line
    assert not os.path.exists(out)


@needs_mpi
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the rank's process in /proc")
def test_sigterm_to_mpiexec_ends_a_job_whose_rank_is_stopped(data, tmp_path):
    """mpiexec passes SIGTERM on to the ranks; rank 1 is stopped (kill -STOP) and never answers,
    so rank 0 aborts the job TINYALEX_MPI_STOP_SECONDS after its last exchange."""
    out, marker = str(tmp_path / "run"), f"stopped-{os.getpid()}"
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "train.py"),
                             *train_args(data, out, "--epochs", "1000", "--towers", "2")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=environment(threads=1, TINYALEX_TEST_JOB=marker,
                                            TINYALEX_MPI_STOP_SECONDS="2"))
    pid = None
    try:
        for line in proc.stdout:                 # training has started
            if line.startswith("model:"):
                break
        pid = _rank_pid(marker, 1)
        assert pid, "rank 1 not found"
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)         # as `timeout` does
        _, stderr = proc.communicate(timeout=30)
        assert time.monotonic() - start < 15
    finally:
        if proc.poll() is None:
            proc.kill()
        if pid and _rank_pid(marker, 1):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert stderr.count("stopped by SIGTERM: no exchange between the ranks ended for 2 s") == 1, stderr
    assert "Traceback" not in stderr


def test_a_bad_stop_bound_is_one_line(monkeypatch):
    from tinyalex.errors import TinyAlexError
    from tinyalex.mpi.ranks import stop_seconds
    monkeypatch.setenv("TINYALEX_MPI_STOP_SECONDS", "soon")
    with pytest.raises(TinyAlexError, match="TINYALEX_MPI_STOP_SECONDS='soon'"):
        stop_seconds()
    monkeypatch.setenv("TINYALEX_MPI_STOP_SECONDS", "2.5")
    assert stop_seconds() == 2.5


@needs_mpi
def test_towers_on_one_process_say_how_to_start_two():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--towers", "2"],
                          capture_output=True, text=True, cwd=ROOT, env=environment(), timeout=60)
    line = _one_error_line(proc)
    assert "exactly 2 processes" in line and "mpiexec -n 2" in line
