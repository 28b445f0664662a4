"""The benchmark: `python -m tinyalex bench`, tinyalex against PyTorch on the same CPU.

    python -m tinyalex bench [--model cifar|paper|tiny] [--batch-size 128] [--threads N]
                             [--route fast|readable|both] [--steps 5] [--warmup 1] [--vs-torch]
                             [--layers] [--busy N] [--json] [--rss-only tinyalex|torch]

What is timed, on random float32 images of the model's input shape and random labels:

    training step   model.loss(x, y, rng=...) + SGD.step (the real optimizer: momentum 0.9,
                    weight decay 5e-4), i.e. forward with dropout, loss, backward, update
    evaluation      model.forward(x): forward pass, dropout off

The very first training step is timed on its own ("cold": Numba compiles its kernels, or loads
them from its cache) and kept out of the figures. Then `--warmup` untimed rounds, then
`--steps` timed rounds; a round runs, one after the other,

    tinyalex train, readable train, PyTorch train, tinyalex eval, readable eval, PyTorch eval

("tinyalex" is the route training runs, `layers/fast/`; "readable" is `layers/` itself, timed
with --route both, the default, so the table shows what the fast route buys; PyTorch with
--vs-torch)

so both frameworks see the same machine load, which on a shared machine drifts by the
minute. Figures are medians over the rounds, in images per second; only a ratio measured
side by side like this means much.

--vs-torch builds the same network in PyTorch (`torch_model`): Conv2d with the same groups,
ReLU, LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2) (PyTorch divides alpha by the window
size, so this is the paper's alpha=1e-4 on the sum), MaxPool2d(3, 2), Dropout(0.5), Linear;
the tinyalex weights are copied in, and it trains with torch.optim.SGD(momentum=0.9,
weight_decay=5e-4) and cross_entropy, with torch.set_num_threads(the same thread count).
PyTorch is imported only then.

--busy N measures the busy machine a laptop is: every round runs twice, once idle and once
while N other processes each keep a core busy (paused with SIGSTOP between, so idle and busy
rounds alternate and see the same drift), and the report gives the busy img/s beside the idle
ones and the share of the idle speed each route and PyTorch keeps.

--layers times every layer's forward and backward pass separately. For tinyalex it runs the
model's own passes (`AlexNet.forward_tape` / `backward_tape`, which walk the model's plan)
with every function of the route wrapped in a timer (`TimedRoute`); on the fast route each
convolution has its ReLU fused in, so its conv rows include the ReLU and its relu1..relu5 rows
read 0. For PyTorch it runs each module
alone on a detached copy of its input (requires_grad, except conv1's: the image needs no
gradient, in either framework) and calls backward with a random upstream gradient. PyTorch's
in-place ReLU is timed out of place there (autograd forbids in-place on such a leaf).
These layer rounds interleave too (one warm-up, then `--steps` of each framework in turn);
the table ends with the sum of its rows beside the whole step timed before, so the cost
of timing layer by layer (and any change in the machine's load) shows.

Memory. The peak resident set size (RSS) of the process is printed at the end, but with
--vs-torch it holds both frameworks. To compare the two, run each alone:

    /usr/bin/time -v python -m tinyalex bench --model cifar --rss-only tinyalex
    /usr/bin/time -v python -m tinyalex bench --model cifar --rss-only torch

and read "Maximum resident set size" (or the peak RSS the command prints itself). --rss-only
runs training steps of one framework only: the tinyalex run never imports torch, the torch
run builds no tinyalex model (it still imports NumPy and Numba via the architecture table).

Speed depends on the BLAS kernels: the report names the BLAS library, its kernel type and
thread count (via threadpoolctl, when installed), and the Numba kernels' thread count, and warns
when OPENBLAS_CORETYPE is set (it forces one kernel type whatever the CPU supports).
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections import OrderedDict

import numpy as np

from layers.fast import threads as fast_threads
from tinyalex.errors import TinyAlexError
from tinyalex.model import MODELS
from tinyalex.torch_twin import INSTALL_HINT, import_torch, torch_model
from tinyalex.words import plural

LR = 0.01            # learning rate of the timed steps; any value costs the same
MOMENTUM, WEIGHT_DECAY = 0.9, 5e-4


# ---------------------------------------------------------------------------------------------
# The timed tasks

def random_batch(model_input_shape, num_classes, batch, seed):
    """Random images (batch, C, H, W) float32 and labels (batch,) int64."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + tuple(model_input_shape), dtype=np.float32)
    y = rng.integers(0, num_classes, size=batch).astype(np.int64)
    return x, y


def tinyalex_tasks(model, x, y, seed):
    """(train, evaluate) closures: one training step with the real SGD, one forward pass."""
    from tinyalex.optim import SGD
    sgd = SGD(model.params, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, route=model.route)
    rng = np.random.default_rng(seed)

    def train():
        sgd.step(model.params, model.loss(x, y, rng=rng).grads, LR)

    def evaluate():
        model.forward(x)
    return train, evaluate


def torch_tasks(net, x, y):
    """(train, evaluate) closures for the PyTorch model, the same work as tinyalex_tasks."""
    torch = import_torch()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)

    def train():
        net.train()
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()

    def evaluate():
        net.eval()
        with torch.inference_mode():
            net(xt)
    return train, evaluate


def seconds(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_rounds(tasks, rounds, warmup):
    """Run `warmup` untimed rounds, then `rounds` timed ones, of every task in order (so the
    tasks interleave). tasks: {name: fn}. Returns {name: [seconds per round]}."""
    for _ in range(warmup):
        for fn in tasks.values():
            fn()
    times = {name: [] for name in tasks}
    for _ in range(rounds):
        for name, fn in tasks.items():
            times[name].append(seconds(fn))
    return times


# ---------------------------------------------------------------------------------------------
# A busy machine

SPIN = """import ctypes, os, sys
parent = int(sys.argv[1])
try:                               # Linux: SIGKILL when the bench dies, even while paused
    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except (AttributeError, OSError):
    pass
print("ready", flush=True)
while os.getppid() == parent:      # elsewhere: ends by itself once the bench is gone
    for _ in range(1000000):
        pass
"""


class BusyCores:
    """`n` other processes that each keep a core busy (a Python loop, as any program would),
    paused (SIGSTOP) and resumed (SIGCONT) between phases of the bench; closed at the end.
    A spinner whose bench dies is killed by the kernel (Linux's parent-death signal), or ends
    by itself when it next sees its parent gone."""

    def __init__(self, n):
        import subprocess
        self.procs = [subprocess.Popen([sys.executable, "-c", SPIN, str(os.getpid())],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL) for _ in range(n)]
        for proc in self.procs:       # set up (the parent-death signal) before it is paused
            proc.stdout.readline()
        self.pause()

    def _signal(self, signum):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    def pause(self):
        import signal
        self._signal(signal.SIGSTOP)

    def resume(self):
        import signal
        self._signal(signal.SIGCONT)
        time.sleep(0.05)              # let the spinners take their cores before timing starts

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
            proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def time_phases(tasks, rounds, warmup, busy):
    """time_rounds with every round run twice, idle (the busy processes paused) then busy.
    Returns {"idle": {name: [seconds]}, "busy": {name: [seconds]}}."""
    times = {"idle": {name: [] for name in tasks}, "busy": {name: [] for name in tasks}}
    for r in range(warmup + rounds):
        for phase in ("idle", "busy"):
            (busy.resume if phase == "busy" else busy.pause)()
            for name, fn in tasks.items():
                t = seconds(fn)
                if r >= warmup:
                    times[phase][name].append(t)
    busy.pause()
    return times


# ---------------------------------------------------------------------------------------------
# Per-layer timing

class TimedRoute:
    """A route (layers or layers.fast) whose every function records its seconds in `calls`, in
    the order of the calls."""

    def __init__(self, ops):
        self.ops, self.calls = ops, []

    def __getattr__(self, name):
        fn = getattr(self.ops, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.calls.append(time.perf_counter() - start)
            return out
        return timed

    def per_step(self, steps):
        """{name: seconds} of the steps [(name, kind, options)] that called the route, one call
        each, in the order they made the calls (the flatten is a reshape: no call); then empty."""
        names = [name for name, kind, _ in steps if kind != "flatten"]
        assert len(names) == len(self.calls), (names, len(self.calls))
        timed, self.calls = dict(zip(names, self.calls)), []
        return timed


def tinyalex_layer_round(model, x, y, seed):
    """A function running one training step layer by layer, returning ({name: forward seconds},
    {name: backward seconds}), timing the route's functions as the model calls them (a fused
    convolution has its ReLU's time, and the ReLU reads 0); "loss" (one call: the loss and its
    gradient) and "update" (SGD.step) have a forward time only."""
    from tinyalex.model import layer_plan
    from tinyalex.optim import SGD
    sgd = SGD(model.params, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, route=model.route)
    rng = np.random.default_rng(seed)
    layers = [name for name, kind, _ in layer_plan(model.arch) if kind != "flatten"]

    def one_round():
        untimed, model.ops = model.ops, TimedRoute(model.ops)
        try:
            logits, tape = model.forward_tape(x, train=True, rng=rng)
            fwd = model.ops.per_step(model.plan)
            start = time.perf_counter()
            _, dlogits = untimed.softmax_cross_entropy(logits, y)
            loss = time.perf_counter() - start
            grads, _ = model.backward_tape(tape, dlogits)
            bwd = model.ops.per_step(model.plan[::-1])
        finally:
            model.ops = untimed
        fwd = {name: fwd.get(name, 0.0) for name in layers}
        fwd["loss"] = loss
        fwd["update"] = seconds(lambda: sgd.step(model.params, grads, LR))
        return fwd, {name: bwd.get(name, 0.0) for name in layers}
    return one_round


def torch_layer_round(net, x, y, seed):
    """Like tinyalex_layer_round, for the PyTorch model: each module runs alone on a detached
    copy of its input and gets a random upstream gradient; the loss has both times."""
    torch = import_torch()
    generator = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    # ReLU(inplace=True) may not write into a leaf that requires grad: time it out of place
    modules = [(name, torch.relu if isinstance(m, torch.nn.ReLU) else m)
               for name, m in net.named_children() if not isinstance(m, torch.nn.Flatten)]
    inputs, upstream = {}, {}
    net.train()
    with torch.no_grad():                             # every module's input, once
        h = xt
        for name, m in net.named_children():
            if isinstance(m, torch.nn.Flatten):
                h = m(h)
                continue
            inputs[name] = h
            h = (torch.relu if isinstance(m, torch.nn.ReLU) else m)(h)
            upstream[name] = torch.randn(h.shape, generator=generator)
    logits, first = h, modules[0][0]

    def one_round():
        net.train()
        opt.zero_grad(set_to_none=True)
        fwd, bwd = {}, {}
        for name, fn in modules:
            a = inputs[name].detach().requires_grad_(name != first)   # the image: no gradient
            start = time.perf_counter()
            out = fn(a)
            mid = time.perf_counter()
            out.backward(upstream[name])
            fwd[name], bwd[name] = mid - start, time.perf_counter() - mid
        a = logits.detach().requires_grad_(True)
        start = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(a, yt)
        mid = time.perf_counter()
        loss.backward()
        fwd["loss"], bwd["loss"] = mid - start, time.perf_counter() - mid
        fwd["update"] = seconds(opt.step)
        return fwd, bwd
    return one_round


def layer_times(round_fns, rounds):
    """Interleave one warm-up and then `rounds` timed rounds of every layer-round function.
    round_fns: {who: one_round}. Returns {who: {layer: (median forward s, median backward s
    or None)}}."""
    samples = {who: [] for who in round_fns}
    for r in range(rounds + 1):                       # round 0 is a warm-up
        for who, one_round in round_fns.items():
            result = one_round()
            if r:
                samples[who].append(result)
    return {who: {name: (statistics.median(f[name] for f, _ in got),
                         statistics.median(b[name] for _, b in got) if name in got[0][1] else None)
                  for name in got[0][0]}
            for who, got in samples.items()}


def layer_rows(tx, pt=None, rd=None):
    """JSON-able rows: layer, forward/backward ms per runner (tinyalex, torch, and the readable
    route when timed) and each layer's share of the sum over all rows (the step)."""
    def total(t):
        return sum(f + (b or 0.0) for f, b in t.values())
    rows = []
    for name in tx:
        row = {"layer": name}
        for label, t in (("tinyalex", tx), ("torch", pt), ("readable", rd)):
            if label == "readable" and rd is None:
                continue
            f, b = t[name] if t is not None and name in t else (None, None)
            row[f"{label}_forward_ms"] = None if f is None else 1e3 * f
            row[f"{label}_backward_ms"] = None if b is None else 1e3 * b
            row[f"{label}_share"] = None if f is None else (f + (b or 0.0)) / total(t)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# What the machine runs on

def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def coretype_warning(environ=os.environ):
    """A warning when OPENBLAS_CORETYPE is set, else None."""
    core = environ.get("OPENBLAS_CORETYPE")
    if not core:
        return None
    flags = _cpu_flags()
    if flags is None:
        note = ""
    elif "avx512f" in flags:
        note = " (this CPU has AVX-512, whose faster kernels then go unused)"
    else:
        note = " (this CPU has no AVX-512, so OpenBLAS may well pick the same by itself)"
    return (f"warning: OPENBLAS_CORETYPE={core} is set: OpenBLAS uses that kernel type whatever "
            f"the CPU supports{note}; for speed figures run "
            f"env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m tinyalex bench ...")


def runtime_info():
    """The BLAS and OpenMP libraries loaded (threadpoolctl, if installed) and the kernels' threads:
    {"blas": [...], "openmp": [...], "kernel_threads", ...}. The blas and openmp lists are None
    without threadpoolctl."""
    info = {"blas": None, "openmp": None, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        info["threadpoolctl"] = f"not installed ({INSTALL_HINT} to see the BLAS kernel type)"
    else:
        keep = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
        pools = threadpool_info()
        for api in ("blas", "openmp"):
            info[api] = [dict({k: pool.get(k) for k in keep},
                              library=os.path.basename(pool.get("filepath") or ""))
                         for pool in pools if pool.get("user_api") == api]
    info["kernel_threads"] = fast_threads.get_num_threads()
    return info


def describe_runtime(info):
    """Lines of text for runtime_info()."""
    lines = []
    if info["blas"] is None:
        lines.append(f"BLAS: unknown, threadpoolctl {info['threadpoolctl']}")
    for api in ("blas", "openmp"):
        for pool in info[api] or []:
            parts = [" ".join(str(p) for p in (pool["internal_api"], pool["version"]) if p)]
            if pool.get("architecture"):
                parts.append(f"{pool['architecture']} kernels")
            parts.append(plural(pool['num_threads'], 'thread'))
            if pool.get("threading_layer"):
                parts.append(pool["threading_layer"])
            lines.append(f"{'BLAS' if api == 'blas' else 'OpenMP'}: {', '.join(parts)} ({pool['library']})")
    lines.append(f"Numba kernels: {plural(info['kernel_threads'], 'thread')} (layers/fast/kernels.py)")
    return lines


def peak_rss_bytes():
    """The process's peak resident set size so far, or None where `resource` is missing."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024      # Linux counts KiB


def seconds_since_launch():
    """Seconds since this process started (Linux /proc), or None."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")   # field 22: start time
    except (OSError, ValueError, IndexError):
        return None


# ---------------------------------------------------------------------------------------------
# The command

def run_bench(args):
    from tinyalex._runtime import available_cores
    from tinyalex.model import ARCHS, build_model
    from tinyalex.warm_up import warm_up
    if args.rss_only and (args.vs_torch or args.layers or args.busy):
        raise TinyAlexError("--rss-only runs one framework alone: drop --vs-torch, --layers and --busy")
    if args.busy and args.layers:
        raise TinyAlexError("--busy times whole steps, idle and busy: drop --layers")
    if args.rss_only != "torch":   # (PyTorch measured alone: no tinyalex kernels in its memory)
        warm_up(route="fast" if args.route == "both" else args.route)   # as a training run does: Numba loads its kernels while the model is built
    torch = None
    if args.vs_torch or args.rss_only == "torch":   # (a missing PyTorch is the one line said)
        torch = import_torch()
    warning = coretype_warning()
    if warning:
        print(warning, file=sys.stderr)
    threads = args.threads or available_cores()
    fast_threads.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    say = (lambda *a: None) if args.json else print
    arch = ARCHS[args.model]
    x, y = random_batch(arch.input_shape, 10, args.batch_size, args.seed)
    say(f"tinyalex bench: model {args.model}, batch {args.batch_size}, {plural(threads, 'thread')}, "
        f"{args.steps} timed rounds after {args.warmup} warm-up; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    result = {"model": args.model, "batch": args.batch_size, "threads": threads,
              "steps": args.steps, "warmup": args.warmup, "loadavg_start": list(os.getloadavg())}

    if args.rss_only:
        return _rss_only(args, arch, x, y, threads, result, say)

    route = "fast" if args.route == "both" else args.route
    model = build_model(args.model, 10, seed=args.seed, route=route)
    result["route"] = route
    readable = None
    if args.route == "both":   # the readable route beside it, on its own copy of the same weights
        readable = build_model(args.model, 10, seed=args.seed, route="readable")
        readable.params = {k: v.copy() for k, v in model.params.items()}
    tasks = OrderedDict()
    tx_train, tx_eval = tinyalex_tasks(model, x, y, args.seed)
    net = None
    if args.vs_torch:
        net = torch_model(arch, model.num_classes, model.params)   # same weights, before any step
        pt_train, pt_eval = torch_tasks(net, x, y)
    result["cold_first_step_s"] = seconds(tx_train)
    result["launch_to_first_step_s"] = seconds_since_launch()
    result["torch_first_step_s"] = seconds(pt_train) if net is not None else None
    say(f"first training step: {result['cold_first_step_s']:.2f} s" +
        (f", ending {result['launch_to_first_step_s']:.1f} s after launch" if result["launch_to_first_step_s"] else "") +
        " (Numba compiling its kernels or loading them from its cache included)")
    if readable is not None:
        rd_train, rd_eval = tinyalex_tasks(readable, x, y, args.seed)
        result["readable_first_step_s"] = seconds(rd_train)

    for kind, tx_fn, rd_fn, pt_fn in (("train", tx_train, readable and rd_train, net and pt_train),
                                      ("eval", tx_eval, readable and rd_eval, net and pt_eval)):
        tasks[f"tinyalex_{kind}"] = tx_fn
        if rd_fn:
            tasks[f"readable_{kind}"] = rd_fn
        if pt_fn:
            tasks[f"torch_{kind}"] = pt_fn
    if args.busy:
        with BusyCores(args.busy) as busy:
            phases = time_phases(tasks, args.steps, args.warmup, busy)
        _summarise(result, phases["idle"], args.batch_size, readable is not None)
        result["busy"] = {"processes": args.busy}
        _summarise(result["busy"], phases["busy"], args.batch_size, readable is not None)
        for key, value in list(result["busy"].items()):
            if key.endswith("_img_s") and result.get(key):
                result["busy"][key.replace("_img_s", "_share_of_idle")] = value / result[key]
    else:
        _summarise(result, time_rounds(tasks, args.steps, args.warmup), args.batch_size,
                   readable is not None)

    if args.layers:
        round_fns = {"tinyalex": tinyalex_layer_round(model, x, y, args.seed)}
        if readable is not None:
            round_fns["readable"] = tinyalex_layer_round(readable, x, y, args.seed)
        if net is not None:
            round_fns["torch"] = torch_layer_round(net, x, y, args.seed)
        per_layer = layer_times(round_fns, args.steps)
        result["layers"] = layer_rows(per_layer["tinyalex"], per_layer.get("torch"), per_layer.get("readable"))

    if _finish(result, args.json):
        return 0
    _print_report(result, args)
    return 0


def _finish(result, as_json):
    """Add the runtime, the peak RSS and the load at the end to `result`; print it as JSON when
    asked. Returns whether it was printed."""
    result["runtime"] = runtime_info()
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["loadavg_end"] = list(os.getloadavg())
    if as_json:
        print(json.dumps(result))
    return as_json


def _summarise(result, times, batch, has_readable):
    """Medians in img/s and the ratios, from {task name: [seconds]}, into `result`."""
    for kind in ("train", "eval"):
        for who in ("tinyalex", "readable", "torch"):
            t = times.get(f"{who}_{kind}")
            if who == "readable" and not t:
                continue
            result[f"{who}_{kind}_img_s"] = batch / statistics.median(t) if t else None
            result[f"{who}_{kind}_times_s"] = t
        both = result[f"tinyalex_{kind}_img_s"], result[f"torch_{kind}_img_s"]
        result[f"{kind}_ratio"] = both[0] / both[1] if both[1] else None
        if has_readable:
            result[f"{kind}_fast_over_readable"] = both[0] / result[f"readable_{kind}_img_s"]


def _rss_only(args, arch, x, y, threads, result, say):
    """Training steps of one framework alone, for a separate peak-RSS measurement."""
    from tinyalex.model import build_model
    if args.rss_only == "tinyalex":
        route = "fast" if args.route == "both" else args.route
        train, _ = tinyalex_tasks(build_model(args.model, 10, seed=args.seed, route=route), x, y, args.seed)
    else:
        train, _ = torch_tasks(torch_model(arch, 10), x, y)    # PyTorch's own initialisation
    result["only"] = args.rss_only
    result["cold_first_step_s"] = seconds(train)
    t = time_rounds({"train": train}, args.steps, args.warmup)["train"]
    result["train_img_s"] = args.batch_size / statistics.median(t)
    result["train_times_s"] = t
    if _finish(result, args.json):
        return 0
    rss = result["peak_rss_bytes"]
    say(f"{args.rss_only} training alone: {result['train_img_s']:.1f} img/s (median of {args.steps}); "
        f"first step {result['cold_first_step_s']:.2f} s")
    say(f"peak RSS of this process: {rss / 2**30:.2f} GiB" if rss else "peak RSS: unknown on this system")
    for line in describe_runtime(result["runtime"]):
        say(line)
    return 0


def _cell(value, width, spec=".1f", suffix=""):
    """value formatted right-aligned in `width` characters; "-" for None."""
    return f"{'-' if value is None else format(value, spec) + suffix:>{width}}"


def _print_report(result, args):
    for line in describe_runtime(result["runtime"]):
        print(line)
    print()
    has_rd = "readable_train_img_s" in result
    ours = f"tinyalex {result['route']}"
    print(f"{'':12}{ours + ' img/s':>22}" + (f"{'readable img/s':>16}" if has_rd else "") +
          f"{'PyTorch img/s':>16}{'tinyalex/PyTorch':>18}" + (f"{'fast/readable':>15}" if has_rd else ""))
    for kind, label in (("train", "training"), ("eval", "evaluation")):
        print(f"{label:12}{_cell(result[f'tinyalex_{kind}_img_s'], 22)}" +
              (_cell(result[f"readable_{kind}_img_s"], 16) if has_rd else "") +
              f"{_cell(result[f'torch_{kind}_img_s'], 16)}{_cell(result[f'{kind}_ratio'], 18, '.2f')}" +
              (_cell(result[f"{kind}_fast_over_readable"], 15, ".2f") if has_rd else ""))
    print(f"(medians of {args.steps} interleaved rounds; training = forward + backward + SGD update)")
    if "busy" in result:
        _print_busy(result, has_rd)
    if "layers" in result:
        _print_layers(result)
    rss = result["peak_rss_bytes"]
    if rss:
        both = " (every route together; measure each alone with --rss-only)" if args.vs_torch or has_rd else ""
        print(f"peak RSS of this process: {rss / 2**30:.2f} GiB{both}")
    print(f"load average at the end: {' '.join(f'{v:.2f}' for v in result['loadavg_end'])}")


def _print_busy(result, has_rd):
    busy = result["busy"]
    n = busy["processes"]
    whos = [("tinyalex", f"tinyalex {result['route']}")] + ([("readable", "readable")] if has_rd else []) + \
        [("torch", "PyTorch")]
    print()
    print(f"The same rounds with {n} other process{'es' * (n > 1)} keeping {'a core' if n == 1 else f'{n} cores'} "
          f"busy (idle and busy rounds alternate):")
    print(f"{'img/s':26}" + "".join(f"{label:>18}" for _, label in whos) + f"{'tinyalex/PyTorch':>18}")
    for kind, label in (("train", "training"), ("eval", "evaluation")):
        for phase, source in (("idle", result), ("busy", busy)):
            print(f"{label + ', ' + phase:26}" + "".join(_cell(source.get(f"{who}_{kind}_img_s"), 18) for who, _ in whos)
                  + _cell(source[f"{kind}_ratio"], 18, ".2f"))
        print(f"{label + ', busy/idle':26}" + "".join(
            _cell(None if busy.get(f"{who}_{kind}_share_of_idle") is None
                  else 100 * busy[f"{who}_{kind}_share_of_idle"], 17, ".0f", "%") + " " for who, _ in whos))


def _print_layers(result):
    whos = [("tinyalex", f"tinyalex {result['route']}")]
    if "readable_train_img_s" in result:
        whos.append(("readable", "readable"))
    whos.append(("torch", "PyTorch"))
    print()
    print(f"{'layer':10}" + "".join(f"{label + ' fwd ms':>{max(16, len(label) + 9)}}{'bwd ms':>9}{'share':>8}"
                                    for _, label in whos))
    sums = {who: 0.0 for who, _ in whos}
    for row in result["layers"]:
        line = f"{row['layer']:10}"
        for who, label in whos:
            f, b, share = row[f"{who}_forward_ms"], row[f"{who}_backward_ms"], row[f"{who}_share"]
            sums[who] += (f or 0.0) + (b or 0.0)
            line += (_cell(f, max(16, len(label) + 9)) + _cell(b, 9) +
                     _cell(None if share is None else 100 * share, 8, ".1f", "%"))
        print(line)
    step = {who: 1e3 * statistics.median(result[f"{who}_train_times_s"])
            if result[f"{who}_train_times_s"] else None for who, _ in whos}
    print(f"{'sum':10}" + "".join(_cell(sums[who] if step[who] is not None else None, max(16, len(label) + 9)) + " " * 17
                                  for who, label in whos))
    print(f"{'step':10}" + "".join(_cell(step[who], max(16, len(label) + 9)) + " " * 17 for who, label in whos) +
          "(a whole training step, timed above)")
    print("loss: tinyalex computes the loss and its gradient in one call (fwd column); "
          "update: the SGD step (fwd column)")


def register(subparsers):
    """Add the `bench` command to an argparse subparsers object; its handler is run_bench."""
    from tinyalex.argtypes import add_route_argument, add_seed_argument, add_threads_argument, non_negative_int, positive_int

    p = subparsers.add_parser(
        "bench", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="training and evaluation speed, alone or side by side with PyTorch",
        description="Time a training step (forward, backward, SGD update) and an evaluation "
                    "forward pass on random data, after warm-up, as medians over interleaved "
                    "rounds, in images per second.",
        epilog="Peak memory of each framework alone:\n"
               "  /usr/bin/time -v python -m tinyalex bench --model cifar --rss-only tinyalex\n"
               "  /usr/bin/time -v python -m tinyalex bench --model cifar --rss-only torch\n"
               "For speed figures on a machine that sets OPENBLAS_CORETYPE:\n"
               "  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m tinyalex bench --vs-torch")
    p.add_argument("--model", choices=MODELS, default="cifar",
                   help="cifar (32x32 input, default), paper (224x224) or tiny (a few channels)")
    p.add_argument("--batch-size", type=positive_int, default=128, metavar="N",
                   help="images per step (default 128)")
    add_threads_argument(p)      # (PyTorch gets the same count)
    p.add_argument("--steps", type=positive_int, default=5, metavar="N",
                   help="timed rounds; the figures are their medians (default 5)")
    p.add_argument("--warmup", type=non_negative_int, default=1, metavar="N",
                   help="untimed rounds after the cold first step (default 1)")
    add_route_argument(p, ("fast", "readable", "both"), "both",
                       help="the layers timed: fast (layers/fast/, what training runs), readable "
                            "(layers/ itself), both side by side (default), to show what the fast "
                            "route buys, or DIR, your own (python -m tinyalex exercise)")
    p.add_argument("--vs-torch", action="store_true",
                   help="also time the same model in PyTorch, interleaved, and print the ratios")
    p.add_argument("--layers", action="store_true",
                   help="also time every layer's forward and backward pass")
    p.add_argument("--busy", type=non_negative_int, default=0, metavar="N",
                   help="also time every round with N other processes keeping N cores busy "
                        "(a Python loop each), alternating idle and busy rounds, and report the "
                        "share of the idle speed each keeps (default 0: idle only)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--rss-only", choices=("tinyalex", "torch"), default=None,
                   help="train with one framework only (nothing else loaded), to measure its "
                        "peak memory alone, e.g. under /usr/bin/time -v")
    add_seed_argument(p, "the random data and weights")
    p.set_defaults(func=run_bench)
