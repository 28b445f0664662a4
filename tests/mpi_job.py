"""The MPI side of tests/test_mpi.py, run by it under mpiexec: `mpiexec -n 2 python tests/mpi_job.py`.

Trains a few SGD steps on MPI (two towers, or data parallel) and the same steps in one process
(on rank 0), from the same initial weights and batches, in float64, and prints on rank 0 one
JSON object: for each case, the largest difference between the two runs' weights (relative
to the weight's largest magnitude) and between their evaluation logits. Also runs the same
with one piece of the MPI maths deliberately broken, to show the comparison catches it:

    towers, no LRN halo      each tower normalises over its own channels only (the paper's way)
    data parallel, 1/size    shard gradients averaged, not weighted by shard size
    data parallel, own masks each rank draws its shard's dropout masks itself
"""

import json
import sys

from tinyalex import _runtime

_runtime.apply()   # before NumPy, as the entry points do (malloc keeps freed memory: fewer page faults)

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from tinyalex.model import build_model  # noqa: E402
from tinyalex.mpi import data_parallel, towers  # noqa: E402
from tinyalex.mpi.data_parallel import DataParallel  # noqa: E402
from tinyalex.mpi.towers import Towers  # noqa: E402
from tinyalex.optim import SGD  # noqa: E402


def compare(comm, name, route, mode, batches, lr=0.05):
    """Weights after len(batches) steps on MPI vs in one process: (weights diff, logits diff,
    whether every rank holds the same weights), on rank 0; None elsewhere."""
    kw = dict(init="torch", seed=3, dtype=np.float64, route=route)
    parallel = Towers(comm) if mode == "towers" else DataParallel(comm)
    model = parallel.wrap(build_model(name, **kw))
    sgd = SGD(model.params)
    ref = build_model(name, **kw) if comm.rank == 0 else None
    sgd_ref = SGD(ref.params) if ref else None
    data = np.random.default_rng(7)
    for step, B in enumerate(batches):
        x, y = data.standard_normal((B,) + model.input_shape), data.integers(0, 10, B)
        result = model.loss(x, y, rng=np.random.default_rng([1, step]))
        loss, grads = result.loss, result.grads
        sgd.step(model.params, grads, lr)
        if ref:
            grads_ref = ref.loss(x, y, rng=np.random.default_rng([1, step])).grads
            sgd_ref.step(ref.params, grads_ref, lr)
    logits = model.forward(x)
    params, _ = parallel.full_state(model.params, sgd.state_dict())
    if mode == "dp":   # every rank must hold rank 0's weights, bit for bit
        root = comm.bcast(params)
        same = comm.allreduce(all(np.array_equal(root[k], model.params[k]) for k in root), op=MPI.LAND)
    else:
        same = True
    if not ref:
        return None
    weights = max(float(np.abs(params[k] - ref.params[k]).max() / np.abs(ref.params[k]).max())
                  for k in ref.params)
    ref_logits = ref.forward(x)
    return {"weights": weights,
            "logits": float(np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()),
            "ranks_identical": bool(same)}


def lrn_within_tower_forward(h, link, name, ops, *, size, **constants):
    out, cache = ops.lrn_forward(np.ascontiguousarray(h), size=size, **constants)
    return out, cache


def lrn_within_tower_backward(dout, cache, link, ops):
    return ops.lrn_backward(dout, cache)


def fail(comm):
    """launch._fail: first every rank fails (rank 0 says it once), then rank 1 alone (it must
    abort the job rather than leave rank 0 waiting for ever in its barrier)."""
    from tinyalex.mpi import launch
    launch.FAIL_TOGETHER_SECONDS = 1.0
    errors = comm.Dup()
    assert launch._fail(errors, comm.rank, "error: every rank failed", 2) == 2
    sys.stdout.flush()
    if comm.rank == 1:
        launch._fail(errors, comm.rank, "error: rank 1 failed alone", 2)
    else:
        comm.Barrier()                     # never completes: rank 1 aborts the job
    print("not reached", flush=True)


def main(which):
    comm = MPI.COMM_WORLD
    if which == "fail":
        return fail(comm)
    batches = (8, 7)                       # 7: unequal shards (3 and 4 on two ranks)
    results = {}
    if which == "two":
        for route in ("readable", "fast"):
            for mode in ("towers", "dp"):
                results[f"{mode} tiny {route}"] = compare(comm, "tiny", route, mode, batches)
        results["towers cifar fast"] = compare(comm, "cifar", "fast", "towers", (2,))
        # the same, broken on purpose: the test expects these to differ
        halo = towers.lrn_halo_forward, towers.lrn_halo_backward
        towers.lrn_halo_forward, towers.lrn_halo_backward = lrn_within_tower_forward, lrn_within_tower_backward
        results["broken: towers, no LRN halo"] = compare(comm, "tiny", "fast", "towers", batches)
        towers.lrn_halo_forward, towers.lrn_halo_backward = halo
        weight = data_parallel.shard_weight
        data_parallel.shard_weight = lambda n_shard, n_batch, size: 1 / size
        results["broken: dp, 1/size"] = compare(comm, "tiny", "fast", "dp", batches)
        data_parallel.shard_weight = weight
        rows = data_parallel.BatchRowsGenerator
        data_parallel.BatchRowsGenerator = lambda rng, batch, lo, hi: rng
        results["broken: dp, own masks"] = compare(comm, "tiny", "fast", "dp", batches)
        data_parallel.BatchRowsGenerator = rows
    else:                                  # three ranks: shards 3/3/2, and 0/1/1 for a batch of 2
        results["dp tiny fast, 3 ranks"] = compare(comm, "tiny", "fast", "dp", (8, 2))
    if comm.rank == 0:
        print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "two")
