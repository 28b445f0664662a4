"""A student's own layers as a third route, and the checker that tells them how they are doing.

`python -m tinyalex exercise --out DIR` (tinyalex/exercise.py) writes a copy of the readable
layers to fill in. This module loads such a folder as a route (`load_student_route`): the
student's functions where they are written, tinyalex's readable ones elsewhere; the model takes
it with `--route DIR`. `python gradcheck.py --layers DIR` runs `check_student`: layer by layer,
in the order that builds up, each against finite differences and against tinyalex's own layer
on the same inputs, then the whole network.

A student's folder is loaded as a package of its own (relative imports work between its files),
and only its layer files are run. A function counts as "not written yet" while its body, after
the docstring, is nothing but `raise NotImplementedError(...)`; a layer is the student's once
all its functions are written. A file that does not import, or lacks a function, is one line
naming the file and the function.
"""

import ast
import copy
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
import types

import numpy as np

from .errors import TinyAlexError
from .exercise import EXERCISES, LAYERS

def is_written(function_node):
    """False while the body after the docstring is only `raise NotImplementedError(...)`."""
    body = function_node.body
    if ast.get_docstring(function_node) is not None:
        body = body[1:]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return True
    exc = body[0].exc
    name = exc.func if isinstance(exc, ast.Call) else exc
    return not (isinstance(name, ast.Name) and name.id == "NotImplementedError")


class StudentRoute(types.SimpleNamespace):
    """The layer functions of a route made of a student's folder: theirs where written,
    tinyalex's readable ones elsewhere. `.theirs`: their layers (EXERCISES keys, all functions
    written); `.unwritten`: {layer: [functions not written yet]} for the layers they began
    or were given; `.folder`, `.files`."""

    def describe(self):
        """One line: whose layers compute."""
        mine = [layer for layer in LAYERS if layer in self.theirs]
        others = [layer for layer in LAYERS if layer not in self.theirs]
        return (f"layers: yours ({self.folder}): {', '.join(mine) or 'none yet'}; "
                f"tinyalex's readable ones: {', '.join(others) or 'none'}"
                + (" (with tinyalex's im2col/col2im)" if "conv" in mine and "im2col" not in self.theirs else ""))


def _package_name(folder):
    return "tinyalex_student_" + hashlib.sha1(os.path.realpath(folder).encode()).hexdigest()[:12]


def load_student_route(folder):
    """The StudentRoute of `folder` (a directory holding some of EXERCISES' files)."""
    import layers as readable
    folder = os.path.realpath(folder)
    if not os.path.isdir(folder):
        raise TinyAlexError(f"{folder}: not a directory of layers (python -m tinyalex exercise --out DIR makes one)")
    present = [name for name, (filename, _) in EXERCISES.items()
               if os.path.isfile(os.path.join(folder, filename))]
    if not present:
        raise TinyAlexError(f"{folder} holds none of the layer files "
                            f"({', '.join(f for f, _ in EXERCISES.values())}); "
                            f"python -m tinyalex exercise --out {folder} writes them")
    package = _package_name(folder)
    for loaded in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[loaded]                  # the files as they are now, not as first loaded
    spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
    spec.submodule_search_locations = [folder]
    sys.modules[package] = importlib.util.module_from_spec(spec)
    ops = {name: getattr(readable, name) for name in readable.__all__}
    theirs, unwritten = [], {}
    for name in present:                         # im2col before conv: conv imports it
        filename, functions = EXERCISES[name]
        path = os.path.join(folder, filename)
        written = _written_functions(path, functions)
        module = _import_student_file(package, name, path)
        for function in functions:
            if not written[function]:            # tinyalex's own stands in, also for the
                setattr(module, function, _readable_function(name, function))   # student's conv
        if all(written.values()):
            theirs.append(name)
            for function in functions:
                ops[function] = getattr(module, function)
        else:
            unwritten[name] = [f for f in functions if not written[f]]
    return StudentRoute(**ops, theirs=theirs, unwritten=unwritten, folder=folder,
                        files={name: os.path.join(folder, EXERCISES[name][0]) for name in present})


def _readable_function(exercise, function):
    module = importlib.import_module("layers.im2col" if exercise == "im2col" else f"layers.{exercise}")
    return getattr(module, function)


def _written_functions(path, functions):
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except SyntaxError as e:
        raise TinyAlexError(f"{path}, line {e.lineno}: syntax error: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TinyAlexError(f"{path}: cannot be read ({e})") from None
    defined = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    for function in functions:
        if function not in defined:
            raise TinyAlexError(f"{path} has no function {function} (the exercise copy defines it; "
                                f"keep its name and signature)")
    return {function: is_written(defined[function]) for function in functions}


def _import_student_file(package, name, path):
    qualified = f"{package}.{name}"
    try:
        return importlib.import_module(qualified)
    except Exception as e:           # the student's code: one line naming their file and line
        sys.modules.pop(qualified, None)
        frame = _frame(e, [path])
        line = f" (line {frame.lineno})" if frame else ""
        raise TinyAlexError(f"{path}: importing it failed: {type(e).__name__}: {e}{line}") from None


def is_student_route(route):
    """Whether `route` names a student's folder rather than one of tinyalex's routes."""
    return isinstance(route, str) and route not in ("fast", "readable") and (
        os.sep in route or "/" in route or os.path.isdir(route))



# ---- the checker ------------------------------------------------------------------------------

# The two most common causes of a wrong answer in each layer, said when it fails.
CAUSES = {
    "relu": ("the mask taken from the wrong array: dx passes dout where the forward's output was > 0",
             "dx not zeroed where the unit was off"),
    "dense": ("a transposed weight gradient: dw = dout.T @ x is (M, D), like w",
              "the bias gradient summed over the wrong axis: db sums dout over the batch (axis 0)"),
    "loss": ("no max shift before exp: large logits overflow to inf or nan",
             "the gradient not divided by N (the loss is a mean over the batch), or the "
             "one-hot target not subtracted"),
    "dropout": ("not scaled by 1 / (1 - drop_prob) at training time (forward and backward)",
                "a new mask drawn in backward instead of the cached one; eval mode not the identity"),
    "pool": ("`=` instead of `+=` (np.add.at) where overlapping windows share a winner",
             "the winner's place in its window not turned into the input's row and column "
             "(oh * stride + i, ow * stride + j)"),
    "lrn": ("the cross term missing: a_j also sits in its neighbours' windows, so dL/da_j has "
            "-2 alpha beta a_j sum_i g_i b_i / s_i",
            "the window not turned around in backward (before and after swapped), or alpha "
            "divided by size when it should not be"),
    "conv": ("the bias gradient summed over the wrong axes (db sums dout over N, OH, OW: axes 0, 2, 3)",
             "`=` instead of `+=` in col2im, or the products transposed or in the wrong order "
             "(dw_g = dout_g @ cols_g.T, dcols_g = w_g.T @ dout_g)"),
}
AGREE = 1e-7          # relative difference allowed against tinyalex's layer (float64)


class _Twin:
    """The ops a gradient check calls, with the student's functions of one layer run beside
    tinyalex's readable ones on the same inputs; every difference is noted in `.differences`."""

    def __init__(self, route, readable, functions):
        self._route, self._readable, self._functions = route, readable, functions
        self.differences = []

    def __getattr__(self, name):
        if name not in self._functions:
            return getattr(self._route, name)
        mine, theirs = getattr(self._route, name), getattr(self._readable, name)
        if name.endswith("_forward"):
            def forward(*args, **kwargs):
                compare = "rng" not in kwargs or kwargs.get("train") is False
                out, cache = mine(*args, **kwargs)
                if compare:
                    ref_out, ref_cache = theirs(*copy.deepcopy(args), **copy.deepcopy(kwargs))
                    self._note(name, "out", out, ref_out)
                    return out, (cache, ref_cache)
                return out, (cache, None)
            return forward
        if name.endswith("_backward"):
            def backward(dout, caches, **kwargs):
                cache, ref_cache = caches
                grads = mine(dout, cache, **kwargs)
                if ref_cache is not None:
                    ref = theirs(dout.copy(), ref_cache, **kwargs)
                    ref = _as_tuple(ref)
                    names = ("dx", "dw", "db") if len(ref) == 3 else ("dx",) * len(ref)
                    for what, g, r in zip(names, _as_tuple(grads), ref):
                        self._note(name, what, g, r)
                return grads
            return backward
        def plain(*args, **kwargs):                       # softmax, softmax_cross_entropy
            result = mine(*args, **kwargs)
            ref = theirs(*copy.deepcopy(args), **copy.deepcopy(kwargs))
            for i, (g, r) in enumerate(zip(_as_tuple(result), _as_tuple(ref))):
                self._note(name, f"result {i + 1}", g, r)
            return result
        return plain

    def _note(self, function, what, got, want):
        got, want = np.asarray(got), np.asarray(want)
        if got.shape != want.shape:
            self.differences.append(f"{function} {what}: shape {got.shape}, tinyalex's {want.shape}")
            return
        if not np.all(np.isfinite(got)):
            self.differences.append(f"{function} {what} {got.shape}: holds inf or nan")
            return
        err = np.abs(got - want).max(initial=0) / max(1e-8, np.abs(want).max(initial=0))
        if err > AGREE:
            self.differences.append(f"{function} {what} {got.shape}: {err:.1e} off tinyalex's "
                                    f"(relative to its largest entry)")


def _as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def _large_logits_case(route, readable, rng):
    """Softmax's classic trap: logits of a few hundred, where exp overflows without the shift."""
    logits = rng.standard_normal((4, 10)) * 400.0
    y = rng.integers(0, 10, size=4)
    problems = []
    for name, args in (("softmax", (logits,)), ("softmax_cross_entropy", (logits, y))):
        with np.errstate(all="ignore"):
            got = _as_tuple(getattr(route, name)(*args))
        want = _as_tuple(getattr(readable, name)(*args))
        for g, w in zip(got, want):
            g = np.asarray(g, dtype=np.float64)
            if g.shape != np.shape(w) or not np.all(np.isfinite(g)) or \
                    np.abs(g - w).max(initial=0) > 1e-6 * max(1.0, np.abs(w).max(initial=0)):
                problems.append(f"{name} on logits of about +-400: "
                                f"{'inf or nan' if not np.all(np.isfinite(g)) else 'wrong'} "
                                f"(tinyalex's is finite)")
                break
    return problems


class LayerReport(types.SimpleNamespace):
    """name; status: 'passed', 'failed' or 'not written yet'; rows (gradcheck.Check);
    problems (lines); unwritten (function names)."""


def check_student(folder, families, check_net, seed=0, on_report=None):
    """Check the student's layers in `folder`, one at a time in LAYERS' order, then the net.
    families: gradcheck's {family: check(rng, ops)}; check_net: its whole-network check;
    on_report(reports): called after each layer (a student's slow layer takes minutes).
    Returns [LayerReport]."""
    import layers as readable
    route = load_student_route(folder)
    reports = _Reports(on_report)
    for layer in LAYERS:
        exercises = [layer] + (["im2col"] if layer == "conv" else [])
        unwritten = [f for e in exercises for f in route.unwritten.get(e, [])]
        if layer not in route.theirs:
            missing = unwritten or [f"{layer}.py"]
            reports.append(LayerReport(name=layer, status="not written yet", rows=[], problems=[],
                                       unwritten=missing))
            continue
        twin = _Twin(route, readable, set(EXERCISES[layer][1]))
        rng = np.random.default_rng([seed, LAYERS.index(layer)])
        problems = []
        try:
            rows = families[layer](rng, twin)   # gradcheck's family of that name
            if layer == "loss":
                problems += _large_logits_case(route, readable, rng)
        except Exception as e:
            rows = []
            problems.append(f"raised {type(e).__name__}: {e}{_where(e, route.files.values())}")
        problems += list(dict.fromkeys(twin.differences))[:4]
        failed = problems or any(not r.passed for r in rows)
        reports.append(LayerReport(name=layer, status="failed" if failed else "passed", rows=rows,
                                   problems=problems, unwritten=unwritten))
    if route.theirs:
        rng = np.random.default_rng([seed, len(LAYERS)])
        try:
            rows, problems = check_net(rng, route), []
        except Exception as e:
            rows, problems = [], [f"raised {type(e).__name__}: {e}{_where(e, route.files.values())}"]
        failed = problems or any(not r.passed for r in rows)
        reports.append(LayerReport(name="net", status="failed" if failed else "passed", rows=rows,
                                   problems=problems, unwritten=[]))
    return reports


def _frame(error, paths):
    """The deepest frame of `error` in one of `paths` (the student's files), or None."""
    paths = {os.path.realpath(p) for p in paths}
    frames = [f for f in traceback.extract_tb(error.__traceback__) if os.path.realpath(f.filename) in paths]
    return frames[-1] if frames else None


def _where(error, paths):
    """' (FILE, line N)' of the student's line that raised `error`, or ''."""
    frame = _frame(error, paths)
    return f" ({frame.filename}, line {frame.lineno})" if frame else ""


class _Reports(list):
    """A list of LayerReports that tells `on_report` of each one as it is added."""

    def __init__(self, on_report):
        super().__init__()
        self.on_report = on_report

    def append(self, report):
        super().append(report)
        if self.on_report:
            self.on_report(list(self))


def format_reports(reports):
    """The checker's report: a line per layer, and for a failure what failed and why it may."""
    return "\n".join(format_report(r, reports[:i]) for i, r in enumerate(reports))


def format_report(r, earlier):
    """One layer's lines; `earlier`: the reports before it (the net points at their failures)."""
    if r.status == "not written yet":
        return f"{r.name:<8} not written yet ({', '.join(r.unwritten)})"
    checks = f"{sum(c.passed for c in r.rows)}/{len(r.rows)} gradient checks"
    if r.name == "net":
        lines = [f"{r.name:<8} {r.status.upper():<6}  {checks}: the tiny AlexNet on your layers "
                 f"(tinyalex's where yours are not written)"
                 + ("; fix the layers above first" if r.status == "failed" and
                    any(other.status == "failed" for other in earlier) else "")]
    else:
        lines = [f"{r.name:<8} {r.status.upper():<6}  {checks}, "
                 f"{'the same as' if not r.problems else 'compared with'} tinyalex's layer"]
    for c in r.rows:
        if not c.passed:
            lines.append(f"         {c.name}: {c.what} is {c.error:.1e} off the finite "
                         f"differences (allowed {c.threshold:.0e})")
    lines += [f"         {p}" for p in r.problems]
    if r.status == "failed" and r.name in CAUSES:
        lines.append("         the usual causes: " + "; or ".join(CAUSES[r.name]))
    return "\n".join(lines)
