"""Training steps on one process, on two towers, or data parallel: images per second, and the
time and bytes of communication per step. The figures of docs/parallel.md.

    python -m tinyalex.mpi.scaling --mode single --threads 2     one process, 2 threads
    mpiexec -n 2 python -m tinyalex.mpi.scaling --mode dp        2 ranks, data parallel
    mpiexec -n 2 python -m tinyalex.mpi.scaling --mode towers    2 ranks, the paper's towers

    python -m tinyalex.mpi.scaling --scaling --compute-s 0.93   the scaling model (no run)

A step is what training runs: model.loss (forward with dropout, loss, backward; under MPI the
exchanges or the Allreduce) and the SGD update, on random images of the model's input shape
(batch --batch-size in all, whatever the number of ranks). Threads per rank default to the
cores / the ranks on this machine. The first --warmup steps are not timed; the figures are
the median step of the next --steps, and the MPI time and bytes per step averaged over them
(sent by rank 0; its partner sends as much). MPI time is wall time inside MPI calls, so it
includes waiting for the other rank, i.e. any imbalance between them.

--scaling prints the model of docs/parallel.md instead: data parallel on N machines joined by
1 or 10 Gbit/s links, from a measured compute time per step (--compute-s: one machine, the
whole batch) and the fixed work every rank repeats (--fixed-s: the SGD update, the batch's
loading). A ring Allreduce sends and receives 2 (N-1)/N times the gradients' bytes per rank
in 2 (N-1) messages (Patarasuk and Yuan); links are taken at their nominal rate, latency
50 us.
"""

GRADIENT_BYTES = {"cifar": 28_565_386 * 4, "paper": 56_909_194 * 4}    # float32, all parameters
LATENCY_S = 50e-6


def allreduce_seconds(nbytes, machines, gbit):
    """A ring Allreduce of nbytes over `machines` machines on links of `gbit` Gbit/s."""
    if machines == 1:
        return 0.0
    share = 2 * (machines - 1) / machines
    return share * nbytes / (gbit * 1e9 / 8) + 2 * (machines - 1) * LATENCY_S


def scaling_rows(compute_s, fixed_s, nbytes, machines=(1, 2, 4, 8, 16), links=(1, 10)):
    """[(gbit, N, step seconds, speed-up, efficiency)]: the global batch split over N machines
    (strong scaling), each computing 1/N of the batch, repeating the fixed work, and summing
    the gradients without overlap."""
    one = compute_s + fixed_s
    rows = []
    for gbit in links:
        for n in machines:
            step = compute_s / n + fixed_s + allreduce_seconds(nbytes, n, gbit)
            rows.append((gbit, n, step, one / step, one / step / n))
    return rows


def print_scaling(args):
    nbytes = GRADIENT_BYTES[args.model]
    print(f"model {args.model}: {nbytes / 1e6:.1f} MB of gradients per step; one machine "
          f"computes a step in {args.compute_s:.2f} s + {args.fixed_s:.2f} s fixed")
    print("| link | machines | Allreduce s | step s | speed-up | efficiency |")
    print("|---|---|---|---|---|---|")
    for gbit, n, step, speedup, eff in scaling_rows(args.compute_s, args.fixed_s, nbytes):
        print(f"| {gbit} Gbit/s | {n} | {allreduce_seconds(nbytes, n, gbit):.2f} | {step:.2f} | "
              f"{speedup:.2f} | {100 * eff:.0f}% |")
    return 0


import argparse
import json
import sys
import time

from ..words import plural


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m tinyalex.mpi.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=("single", "dp", "towers"), default="single")
    p.add_argument("--model", choices=("cifar", "paper", "tiny"), default="cifar")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="per process (default: cores / ranks here)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--route", "--impl", dest="route", choices=("fast", "readable"), default="fast")
    p.add_argument("--json", action="store_true")
    p.add_argument("--scaling", action="store_true", help="print the scaling model, run nothing")
    p.add_argument("--compute-s", type=float, default=None, help="--scaling: one machine's step")
    p.add_argument("--fixed-s", type=float, default=0.0, help="--scaling: work every rank repeats")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.scaling:
        return print_scaling(args)
    from .. import _runtime
    from .._runtime import available_cores, set_threads
    _runtime.apply()
    cores = available_cores()
    comm = None
    if args.mode != "single":
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
        threads = args.threads or max(1, cores // local)
    else:
        threads = args.threads or cores
    set_threads(threads)

    import numpy as np
    from ..model import build_model
    from ..optim import SGD

    model = build_model(args.model, init="torch", seed=0, route=args.route)
    parallel = None
    if args.mode == "towers":
        from .towers import Towers
        parallel = Towers(comm)
    elif args.mode == "dp":
        from .data_parallel import DataParallel
        parallel = DataParallel(comm)
    if parallel:
        model = parallel.wrap(model)
    sgd = SGD(model.params, route=args.route)
    data = np.random.default_rng(0)
    B = args.batch_size
    x = data.standard_normal((B,) + model.input_shape, dtype=np.float32)
    y = data.integers(0, model.num_classes, B)
    times = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup and parallel:
            parallel.traffic.reset()
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        sgd.step(model.params, model.loss(x, y, rng=np.random.default_rng([0, i])).grads, 0.01)
        times.append(time.perf_counter() - start)
    step = float(np.median(times[args.warmup:]))
    report = {"mode": args.mode, "model": args.model, "batch": B, "route": args.route,
              "ranks": 1 if comm is None else comm.Get_size(), "threads_per_rank": threads,
              "step_s": round(step, 4), "img_per_s": round(B / step, 2)}
    if parallel:
        rows = parallel.traffic.per_step()
        report["mpi_s_per_step"] = round(sum(s for _, s in rows.values()), 4)
        report["mb_sent_per_step"] = round(sum(b for b, _ in rows.values()) / 1e6, 3)
        report["exchanges"] = {k: {"mb": round(b / 1e6, 3), "ms": round(1e3 * s, 1)}
                               for k, (b, s) in rows.items()}
    if comm is not None and comm.Get_rank() != 0:
        return 0
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{args.mode}: {plural(report['ranks'], 'process', 'processes')} x "
          f"{plural(threads, 'thread')}, model {args.model}, "
          f"batch {B}: {report['img_per_s']} img/s ({1e3 * step:.0f} ms per step)")
    if parallel:
        print(f"  MPI per step: {1e3 * report['mpi_s_per_step']:.0f} ms, "
              f"{report['mb_sent_per_step']:.2f} MB sent by rank 0")
        for k, r in report["exchanges"].items():
            print(f"    {k:28s} {r['mb']:8.3f} MB {r['ms']:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
