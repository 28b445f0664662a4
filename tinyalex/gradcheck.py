"""Gradient checks: every backward pass against centred finite differences.

A backward pass is a claim about a derivative; this module tests the claim numerically.
For a layer ``out = forward(x, ...)`` it draws a random upstream gradient ``dout`` and
checks the scalar

    f(x) = sum(out * dout)          # df/dx is exactly what backward(dout) returns

against the centred difference

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2 h)          error O(h^2)

entry by entry, in float64, with

    relative error = |a - b| / max(1e-8, |a| + |b|)

and reports the worst entry. A random ``dout`` matters: with an all-ones ``dout`` a
backward that mixes up its outputs (a transposed kernel, a wrong channel in LRN's window)
can still sum to the right answer.

Places where the function has no derivative are avoided on purpose: max-pool gets
inputs with no ties (a permutation of well-separated values, so a step of ``h`` never
changes a window's argmax), ReLU gets no input near 0, dropout gets a fixed mask or a
generator re-seeded before every evaluation. LRN is checked with the paper's alpha=1e-4
*and* with a large alpha: at 1e-4 the cross-channel part of the gradient is small, and
a backward pass that forgets it is easy to miss. In the whole network, where ReLUs and
pools are everywhere, an entry whose nudge crosses a kink is recognised (its differences
at h and 2h disagree) and replaced by another one. An entry whose true gradient is 0 (a
weight that only ever multiplies zeros, behind a silenced ReLU) differs by rounding noise,
an ulp or two of the loss over 2h, ~5e-11, which the 1e-8 floor would call 100% wrong: the
network's relative errors use a floor of 1e-4 instead (entries below 1e-4 are held to 1e-9
absolute).

The step h is chosen per family, because the worst entry is the one whose true gradient
is close to 0, where rounding noise (~eps/h) and truncation error (~h^2) count most:
conv, dense and dropout are linear in each input, so any h is exact and h = 1 leaves no
rounding; LRN and softmax are smooth and use h = 1e-3 with the fourth-order centred
difference (4 g(h) - g(2h)) / 3; the network uses the textbook h = 1e-5.

Layer checks must stay below about 1e-7; the whole shrunken AlexNet, where rounding
errors pile up through eleven layers, below about 1e-5.

Usage::

    python gradcheck.py                 # every check on both routes; exit 1 if any fails
    python gradcheck.py --route readable # only layers/ (fast: only layers/fast/)
    python gradcheck.py --layer lrn     # one family: conv pool lrn dropout dense relu loss net
    python gradcheck.py --seed 3        # another draw of inputs and upstream gradients
    python gradcheck.py --layers DIR    # your own layers (python -m tinyalex exercise --out DIR)

Both routes are checked by default: the readable layers (``layers``) and the fast route
(``layers.fast``), each with the same inputs. Every check reads the layer functions from an
``ops`` namespace (the route's module by default, looked up at call time; the whole-network
check hands it to the model too), so a test can hand in a broken backward and watch the
checker fail.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Callable, NamedTuple, Sequence

import numpy as np

from layers.fast import threads as fast_threads

LAYER_THRESHOLD = 1e-7
NET_THRESHOLD = 1e-5
# Steps h of the centred differences (float64). Rounding noise grows like eps/h and the
# truncation error like h^2 (h^4 for order 4), and the relative error of a gradient entry
# that happens to be near zero magnifies both, so each family gets the step that suits it:
STEP = 1e-5          # the textbook step, the default
LINEAR_STEP = 1.0    # conv, dense, dropout are linear in each input separately: the
                     # difference quotient is exact for any h, and a big h leaves no rounding
SMOOTH_STEP = 1e-3   # LRN and softmax, with the O(h^4) difference (Richardson, order=4)
NET_STEP = 1e-5      # the whole network (kinks are detected and skipped, see check_net)
KINK_TOLERANCE = NET_THRESHOLD / 4   # differences at h and 2h further apart: a kink
MAX_ENTRIES = 500           # per array; larger arrays are checked on a random sample
NET_ENTRIES_PER_ARRAY = 8   # entries sampled from every parameter of the whole net
REL_FLOOR = 1e-8     # rel_error's floor: two tiny numbers are not "100% apart"
# The whole net's floor: h = 1e-5 on a loss of ~2-4 resolves nothing below ~1e-10 (one ulp
# of the loss over 2h is 2e-11 to 9e-11; the fast route's Winograd convolutions give a weight
# whose true gradient is 0 such a difference). At 1e-4 an entry below 1e-4 must agree to
# NET_THRESHOLD * 1e-4 = 1e-9 absolute; the sampled entries that are not 0 are ~1e-4 and up.
NET_FLOOR = 1e-4


class Check(NamedTuple):
    """One row of the report."""

    name: str          # e.g. "conv s4 p2 11x11"
    what: str          # which gradient, and how many entries
    error: float       # worst relative error over the checked entries
    threshold: float

    @property
    def passed(self) -> bool:
        # `not error > threshold` would let a NaN pass; a NaN error is a failure.
        return bool(np.isfinite(self.error) and self.error <= self.threshold)


# ---------------------------------------------------------------------------------
# The two measuring tools: relative error and the centred difference.

def rel_error(analytic, numeric, floor: float = REL_FLOOR) -> float:
    """max_i |a_i - b_i| / max(floor, |a_i| + |b_i|)  (the floor keeps 0 vs 0 at 0)."""
    a = np.asarray(analytic, dtype=np.float64)
    b = np.asarray(numeric, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    err = np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))
    if not np.all(np.isfinite(err)):
        return float("inf")
    return float(err.max())


def numerical_gradient(f: Callable[[], float], x: np.ndarray, indices, h: float = STEP,
                       order: int = 2):
    """Centred differences of the scalar f() with respect to x.flat[indices].

    f takes no arguments and reads x, which is nudged in place and put back.
    """
    return _centred_differences(lambda: float(f()), lambda plus, minus: plus - minus,
                                x, indices, h, order)


def numerical_vjp(forward: Callable[[], np.ndarray], dout: np.ndarray, x: np.ndarray,
                  indices, h: float = STEP, order: int = 2):
    """Centred differences of f = sum(forward() * dout) with respect to x.flat[indices].

    Computed as sum((out(x + h) - out(x - h)) * dout) / 2h, which is the same number as
    (f(x + h) - f(x - h)) / 2h except for rounding: outputs the nudge does not reach
    cancel exactly instead of adding rounding noise to a large sum.
    """
    return _centred_differences(lambda: np.array(forward(), dtype=np.float64, copy=True),
                                lambda plus, minus: np.sum((plus - minus) * dout),
                                x, indices, h, order)


def _centred_differences(evaluate, difference, x, indices, h, order):
    """order 2: g(h) = (f(x + h) - f(x - h)) / 2h, error O(h^2).

    order 4: (4 g(h) - g(2h)) / 3, error O(h^4) (Richardson extrapolation: the h^2 terms
    of g(h) and g(2h) cancel). Used for the smooth layers (LRN, softmax), where it allows a
    step large enough that rounding noise stays far below the threshold.
    """
    if order not in (2, 4):
        raise ValueError(f"order must be 2 or 4, got {order}")
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("finite differences need a contiguous array to nudge in place")

    def slope(i, step):
        old = flat[i]
        flat[i] = old + step
        plus, up = evaluate(), flat[i]
        flat[i] = old - step
        minus, down = evaluate(), flat[i]
        flat[i] = old
        # divide by the step actually taken: old + step is rounded when |old| >> step
        return difference(plus, minus) / (up - down)

    grad = np.empty(len(indices), dtype=np.float64)
    for n, i in enumerate(indices):
        if order == 2:
            grad[n] = slope(i, h)
        else:
            grad[n] = (4.0 * slope(i, h) - slope(i, 2.0 * h)) / 3.0
    return grad


def sample_indices(size: int, rng: np.random.Generator, limit: int = MAX_ENTRIES):
    """All flat indices if there are at most `limit`, else a sorted random sample."""
    if size <= limit:
        return np.arange(size)
    return np.sort(rng.choice(size, size=limit, replace=False))


def _describe(grad_name: str, checked: int, total: int) -> str:
    if checked == total:
        return f"{grad_name} (all {total})"
    return f"{grad_name} ({checked} of {total})"


def check_layer(name: str, forward: Callable, backward: Callable, inputs: dict,
                grad_names: Sequence[str], rng: np.random.Generator, *,
                step: float = STEP, order: int = 2,
                threshold: float = LAYER_THRESHOLD) -> list[Check]:
    """Check a forward/backward pair by finite differences on every named input.

    forward(**inputs) -> (out, cache); backward(dout, cache) -> one gradient or a tuple
    of them, in the order of grad_names. Returns one Check per gradient.
    """
    inputs = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in inputs.items()}
    originals = {k: v.copy() for k, v in inputs.items()}

    out, cache = forward(**inputs)
    dout = rng.standard_normal(np.shape(out))          # never all ones, see module docstring
    grads = backward(dout.copy(), cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(grad_names):
        raise ValueError(f"{name}: backward returned {len(grads)} gradients, "
                         f"expected {len(grad_names)} ({', '.join(grad_names)})")
    touched = [k for k in inputs if not np.array_equal(inputs[k], originals[k])]

    def output():
        return forward(**inputs)[0]

    rows = []
    for grad_name, analytic in zip(grad_names, grads):
        x = inputs[grad_name]
        analytic = np.asarray(analytic)
        what = f"d{grad_name}"
        if analytic.shape != x.shape:
            rows.append(Check(name, f"{what} shape {analytic.shape} != {x.shape}",
                              float("inf"), threshold))
            continue
        idx = sample_indices(x.size, rng)
        numeric = numerical_vjp(output, dout, x, idx, step, order)
        err = rel_error(analytic.reshape(-1)[idx], numeric)
        what = _describe(what, len(idx), x.size)
        if touched:
            what += f" [forward/backward modified {', '.join(touched)}]"
            err = float("inf")
        rows.append(Check(name, what, err, threshold))
    return rows


# ---------------------------------------------------------------------------------
# Inputs that keep away from the points where a layer has no derivative.

def distinct_values(shape, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of evenly spaced values in [-2, 2): no ties anywhere, and
    neighbours at least 4/size apart, far more than the finite-difference step."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * (4.0 / size) - 2.0).reshape(shape)


def away_from_zero(shape, rng: np.random.Generator, margin: float = 0.1) -> np.ndarray:
    """Random values with |x| >= margin (ReLU's kink is at 0)."""
    x = rng.standard_normal(shape)
    return np.sign(x) * (margin + np.abs(x))


# ---------------------------------------------------------------------------------
# The checks, one function per layer family. Each takes the rng and the ops namespace.

def check_conv(rng, ops) -> list[Check]:
    # (label, x shape (N, C, H, W), w shape (F, C//groups, KH, KW), stride, pad, groups)
    configs = [
        ("conv s1 p1 3x3", (2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1),
        ("conv s1 p2 5x3 g2", (2, 4, 8, 7), (6, 2, 5, 3), 1, 2, 2),
        ("conv s4 p2 11x11 on 23x19", (2, 3, 23, 19), (4, 3, 11, 11), 4, 2, 1),
        ("conv s2 p0 3x5 g2 C=6", (1, 6, 9, 11), (4, 3, 3, 5), 2, 0, 2),
        ("conv s3 p1 4x2 C=5 F=3", (2, 5, 7, 9), (3, 5, 4, 2), 3, 1, 1),
        # 3x3 and 5x5, stride 1, 8 channels per group: the fast route takes Winograd here
        ("conv s1 p1 3x3 g2 C=16 Winograd", (2, 16, 6, 5), (4, 8, 3, 3), 1, 1, 2),
        ("conv s1 p2 5x5 C=8 Winograd", (1, 8, 7, 6), (3, 8, 5, 5), 1, 2, 1),
    ]
    rows = []
    for label, xs, ws, stride, pad, groups in configs:
        def forward(x, w, b, stride=stride, pad=pad, groups=groups):
            return ops.conv_forward(x, w, b, stride=stride, pad=pad, groups=groups)
        inputs = dict(x=rng.standard_normal(xs), w=rng.standard_normal(ws),
                      b=rng.standard_normal(ws[0]))
        rows += check_layer(label, forward, ops.conv_backward, inputs, ("x", "w", "b"), rng,
                            step=LINEAR_STEP)
    return rows


def check_pool(rng, ops) -> list[Check]:
    configs = [
        ("maxpool 3/2 (overlapping)", (2, 3, 9, 11), 3, 2),
        ("maxpool 2/2", (2, 3, 8, 6), 2, 2),
        ("maxpool 3x2/1", (1, 2, 6, 5), (3, 2), 1),
    ]
    rows = []
    for label, xs, size, stride in configs:
        def forward(x, size=size, stride=stride):
            return ops.maxpool_forward(x, size=size, stride=stride)
        x = distinct_values(xs, rng)
        # neighbouring values are 4/size apart: a step of a quarter of that never moves an argmax
        rows += check_layer(label, forward, ops.maxpool_backward, dict(x=x), ("x",), rng,
                            step=1.0 / x.size)
    return rows


def check_lrn(rng, ops) -> list[Check]:
    configs = [
        # (label, kwargs)  -- paper: k=2, n=5, alpha=1e-4, beta=0.75
        ("lrn paper alpha=1e-4", dict(size=5, k=2.0, alpha=1e-4, beta=0.75)),
        ("lrn large alpha=1.0", dict(size=5, k=2.0, alpha=1.0, beta=0.75)),
        ("lrn torch alpha/n=0.5/3", dict(size=3, k=1.0, alpha=0.5, beta=0.75,
                                         alpha_over_n=True)),
        ("lrn even size=4 alpha=1.0", dict(size=4, k=2.0, alpha=1.0, beta=0.75)),
    ]
    rows = []
    for label, kwargs in configs:
        def forward(x, kwargs=kwargs):
            return ops.lrn_forward(x, **kwargs)
        # 7 channels: the window is clipped at both edges and is full in the middle.
        x = rng.standard_normal((2, 7, 4, 5))
        rows += check_layer(label, forward, ops.lrn_backward, dict(x=x), ("x",), rng,
                            step=SMOOTH_STEP, order=4)
    return rows


def check_dropout(rng, ops) -> list[Check]:
    rows = []
    drop_prob = 0.5
    mask = rng.random((3, 4, 5, 2)) >= drop_prob          # keep-mask

    def with_mask(x):
        return ops.dropout_forward(x, drop_prob=drop_prob, train=True, mask=mask)
    rows += check_layer("dropout 0.5 fixed mask", with_mask, ops.dropout_backward,
                        dict(x=rng.standard_normal(mask.shape)), ("x",), rng, step=LINEAR_STEP)

    seed = int(rng.integers(2**31))

    def with_generator(x):
        # re-seeded for every evaluation, so every evaluation drops the same units
        return ops.dropout_forward(x, drop_prob=0.3, train=True,
                                   rng=np.random.default_rng(seed))
    rows += check_layer("dropout 0.3 generator", with_generator, ops.dropout_backward,
                        dict(x=rng.standard_normal((6, 17))), ("x",), rng, step=LINEAR_STEP)

    def eval_mode(x):
        return ops.dropout_forward(x, drop_prob=0.5, train=False)
    rows += check_layer("dropout eval (identity)", eval_mode, ops.dropout_backward,
                        dict(x=rng.standard_normal((4, 9))), ("x",), rng, step=LINEAR_STEP)
    return rows


def check_dense(rng, ops) -> list[Check]:
    inputs = dict(x=rng.standard_normal((4, 7)), w=rng.standard_normal((5, 7)),
                  b=rng.standard_normal(5))
    return check_layer("dense 7->5", ops.dense_forward, ops.dense_backward, inputs,
                       ("x", "w", "b"), rng, step=LINEAR_STEP)


def check_relu(rng, ops) -> list[Check]:
    # |x| >= 0.1, so a 1e-2 step never crosses the kink
    return check_layer("relu", ops.relu_forward, ops.relu_backward,
                       dict(x=away_from_zero((3, 4, 5, 3), rng)), ("x",), rng, step=1e-2)


def check_loss(rng, ops) -> list[Check]:
    """softmax_cross_entropy returns (loss, dlogits) directly: check dlogits = dloss/dlogits."""
    rows = []
    for label, shape in (("softmax cross-entropy", (6, 7)), ("softmax cross-entropy N=1", (1, 10))):
        logits = np.ascontiguousarray(rng.standard_normal(shape))
        y = rng.integers(0, shape[1], size=shape[0])
        original = logits.copy()
        _, dlogits = ops.softmax_cross_entropy(logits, y)
        dlogits = np.asarray(dlogits)
        what = _describe("dlogits", logits.size, logits.size)
        if dlogits.shape != logits.shape:
            rows.append(Check(label, f"dlogits shape {dlogits.shape} != {logits.shape}",
                              float("inf"), LAYER_THRESHOLD))
            continue
        if not np.array_equal(logits, original):
            rows.append(Check(label, what + " [modified logits]", float("inf"), LAYER_THRESHOLD))
            continue
        numeric = numerical_gradient(lambda: ops.softmax_cross_entropy(logits, y)[0], logits,
                                     np.arange(logits.size), SMOOTH_STEP, order=4)
        rows.append(Check(label, what, rel_error(dlogits.reshape(-1), numeric), LAYER_THRESHOLD))
    return rows


def kink_free_differences(f: Callable[[], float], x: np.ndarray, rng: np.random.Generator,
                          count: int, h: float = NET_STEP, max_kinks: int = 8):
    """Centred differences of f() at `count` random entries of x that sit away from kinks.

    A network of ReLUs and max-pools is only piecewise smooth. If a nudge of x_i moves some
    unit across 0 or changes a pool's winner, the difference quotient mixes two slopes and
    is wrong by an amount that has nothing to do with the backward pass. Such an entry is
    recognised without looking at the analytic gradient: its differences at h and 2h
    disagree (on a smooth stretch they agree to O(h^2) plus rounding). It is set aside and
    the next random entry is used.

    Returns: (flat indices, their differences at h, number of entries set aside).
    """
    order = rng.permutation(x.size)
    indices, values, kinks = [], [], 0
    for i in order:
        if len(indices) == count or kinks > max_kinks:
            break
        g_h, g_2h = numerical_gradient(f, x, [i], h)[0], numerical_gradient(f, x, [i], 2 * h)[0]
        if abs(g_h - g_2h) > KINK_TOLERANCE * max(1e-8, abs(g_h) + abs(g_2h)):
            kinks += 1
            continue
        indices.append(i)
        values.append(g_h)
    return np.array(indices, dtype=np.intp), np.array(values), kinks


def check_net(rng, ops, route="readable") -> list[Check]:
    """The whole shrunken AlexNet ("tiny", float64): sampled entries of every parameter and
    of the input, against the model's own loss and gradients.

    The model is built on route `route` and calls the functions of `ops`.
    He initialisation rather than PyTorch's default: with the latter the signal shrinks
    layer by layer and the input gradient is ~1e-7, down in the loss's rounding noise.
    Entries next to a kink are skipped and replaced (see kink_free_differences).
    """
    from tinyalex.model import build_model

    model = build_model("tiny", num_classes=10, init="he", seed=int(rng.integers(2**31)),
                        dtype=np.float64, route=route)
    model.ops = ops
    x = np.ascontiguousarray(rng.standard_normal((2,) + tuple(model.input_shape)))
    y = rng.integers(0, model.num_classes, size=len(x))
    # He's init makes logits ~10 apart, a saturated softmax whose gradient has entries of
    # 1e-9, below what a finite difference resolves: scale fc8 to logits of unit spread.
    model.params["fc8.w"] /= max(1.0, float(np.std(model.forward(x))))
    dropout_seed = int(rng.integers(2**31))

    def loss():
        # A fresh generator with the same seed for every evaluation: the same dropout masks.
        return model.loss(x, y, rng=np.random.default_rng(dropout_seed)).loss

    result = model.loss(x, y, rng=np.random.default_rng(dropout_seed), need_dx=True)
    grads = {name: np.array(g, copy=True) for name, g in result.grads.items()}
    grads["x"] = np.array(result.dx, copy=True)
    arrays = dict(model.params, x=x)
    rows = []
    for name, array in arrays.items():
        label = "dx (input)" if name == "x" else f"d{name}"
        if name not in grads or np.shape(grads[name]) != array.shape:
            got = "missing" if name not in grads else f"shape {np.shape(grads[name])}"
            rows.append(Check("net tiny", f"{label} {got}, expected {array.shape}",
                              float("inf"), NET_THRESHOLD))
            continue
        want = min(array.size, 2 * NET_ENTRIES_PER_ARRAY if name == "x" else NET_ENTRIES_PER_ARRAY)
        idx, numeric, kinks = kink_free_differences(loss, array, rng, want)
        err = (rel_error(grads[name].reshape(-1)[idx], numeric, floor=NET_FLOOR)
               if len(idx) == want else float("inf"))
        what = _describe(label, len(idx), array.size)
        if kinks:
            what += f", {kinks} at a kink skipped"
        rows.append(Check("net tiny", what, err, NET_THRESHOLD))
    return rows


FAMILIES = {
    "conv": check_conv,
    "pool": check_pool,
    "lrn": check_lrn,
    "dropout": check_dropout,
    "dense": check_dense,
    "relu": check_relu,
    "loss": check_loss,
    "net": check_net,
}


ROUTE_NAMES = ("readable", "fast")


def default_ops(route="readable"):
    """The layers of a route (`layers` or `layers.fast`), read at call time so a
    monkeypatched function is seen."""
    from tinyalex.model import route_ops
    return route_ops(route)


def run_checks(families: Sequence[str] | None = None, seed: int = 0, ops=None,
               route: str = "readable") -> list[Check]:
    """Run the named families (all by default) on one route and return their rows.

    ops: any object with the layer functions as attributes (default: the route's module).
    Each family draws from its own generator, so `--layer X` gives the same rows as the
    full run, and both routes see the same inputs.
    """
    ops = default_ops(route) if ops is None else ops
    families = list(FAMILIES) if not families else list(families)
    rows = []
    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"unknown layer family {name!r}; choose from {', '.join(FAMILIES)}")
        rng = np.random.default_rng([seed, list(FAMILIES).index(name)])
        rows += check_net(rng, ops, route) if name == "net" else FAMILIES[name](rng, ops)
    return rows


@contextlib.contextmanager
def single_threaded():
    """Run Numba kernels and BLAS on one thread. Every array here is tiny: waking a thread
    pool costs more than the work, and on a busy machine (other processes on the cores)
    far more."""
    threads = fast_threads.get_num_threads()
    fast_threads.set_num_threads(1)
    try:
        try:
            from threadpoolctl import threadpool_limits   # optional (a test dependency)
        except ImportError:
            blas = contextlib.nullcontext()   # root gradcheck.py sets OPENBLAS_NUM_THREADS
        else:
            blas = threadpool_limits(1)
        with blas:
            yield
    finally:
        fast_threads.set_num_threads(threads)


def format_table(rows: Sequence[Check]) -> str:
    name_w = max([len("check")] + [len(r.name) for r in rows])
    what_w = max([len("gradient")] + [len(r.what) for r in rows])
    lines = [f"{'check':<{name_w}}  {'gradient':<{what_w}}  {'max rel err':>11}  "
             f"{'threshold':>9}  result"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(f"{r.name:<{name_w}}  {r.what:<{what_w}}  {r.error:>11.2e}  "
                     f"{r.threshold:>9.0e}  {'PASS' if r.passed else 'FAIL'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, ops=None) -> int:
    """ops, when given, replaces the layers of every route checked (for tests)."""
    parser = argparse.ArgumentParser(
        prog="gradcheck.py",
        description="Check every backward pass against centred finite differences (float64).")
    parser.add_argument("--layer", action="append", choices=list(FAMILIES), metavar="NAME",
                        help=f"check one family (repeatable): {', '.join(FAMILIES)}; "
                             "default: all")
    parser.add_argument("--route", "--impl", dest="route", choices=ROUTE_NAMES + ("both",), default="both",
                        help="the route checked: readable (layers/), fast (layers/fast/), or "
                             "both (default)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed for inputs, upstream gradients and sampled entries")
    parser.add_argument("--layers", metavar="DIR",
                        help="check your own layers in DIR instead (python -m tinyalex exercise "
                             "--out DIR writes them to fill in): layer by layer, against finite "
                             "differences and against tinyalex's")
    args = parser.parse_args(argv)
    if args.layers:
        return _check_student(args.layers, args.seed)

    start = time.perf_counter()
    rows = []
    with single_threaded():
        for route in ROUTE_NAMES if args.route == "both" else (args.route,):
            rows += [r._replace(name=f"{route}: {r.name}")
                     for r in run_checks(args.layer, seed=args.seed, ops=ops, route=route)]
    elapsed = time.perf_counter() - start
    print(format_table(rows))
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} checks passed, {len(failed)} failed "
          f"(seed {args.seed}, {elapsed:.1f} s)")
    if failed:
        print("FAILED: " + "; ".join(f"{r.name} {r.what.split()[0]}" for r in failed))
    return 1 if failed else 0


def _check_student(folder, seed):
    """`--layers DIR`: the student's layers (tinyalex/student.py); exit 1 if any written one fails."""
    from tinyalex.errors import TinyAlexError
    from tinyalex.student import check_student, format_report
    start = time.perf_counter()

    def show(reports):              # each layer as it is checked: a slow one can take minutes
        print(format_report(reports[-1], reports[:-1]), flush=True)
    try:
        with single_threaded():
            reports = check_student(folder, FAMILIES, check_net, seed=seed, on_report=show)
    except TinyAlexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    done = [r for r in reports if r.status != "not written yet" and r.name != "net"]
    failed = [r.name for r in reports if r.status == "failed"]
    print(f"\n{len(done)} of {len(reports) - (reports[-1].name == 'net')} layers written, "
          f"{len(failed)} failing{': ' + ', '.join(failed) if failed else ''} "
          f"(seed {seed}, {time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
