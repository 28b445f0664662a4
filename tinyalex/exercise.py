"""Learn by doing: `python -m tinyalex exercise [LAYER ...] --out DIR`.

Copies the readable layers (`layers/*.py`) into DIR with every forward and backward body
replaced by a "write this" marker that raises NotImplementedError naming the function. The
module docstrings (the dimension legend, the maths, the hints), the signatures and the cache
types stay; helpers that are not exercises (`layers/_checks.py`, `reference.out_size`) are
imported from tinyalex. `python gradcheck.py --layers DIR` checks what the student has written
and `python train.py --route DIR` trains on it (tinyalex/student.py); docs/exercises.md is
the path through them.
"""

import ast
import os

from .errors import TinyAlexError
from .outfiles import atomic_write, make_out_dir, writing

# The exercises in the order they build up, each a file of `layers/` and the functions a student
# writes in it. conv also needs im2col and col2im (written in im2col.py, which comes with it).
EXERCISES = {
    "relu": ("relu.py", ("relu_forward", "relu_backward")),
    "dense": ("dense.py", ("dense_forward", "dense_backward")),
    "loss": ("loss.py", ("softmax", "softmax_cross_entropy")),
    "dropout": ("dropout.py", ("dropout_forward", "dropout_backward")),
    "pool": ("pool.py", ("maxpool_forward", "maxpool_backward")),
    "lrn": ("lrn.py", ("lrn_forward", "lrn_backward")),
    "im2col": ("im2col.py", ("im2col", "col2im")),
    "conv": ("conv.py", ("conv_forward", "conv_backward")),
}
LAYERS = ("relu", "dense", "loss", "dropout", "pool", "lrn", "conv")   # what a student names
COMES_WITH = {"conv": ("im2col",)}
LAYERS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "layers")

IM2COL_DOC = '''"""im2col and col2im: the two functions the convolution (conv.py) stands on.

    im2col(x, KH, KW, stride, pad)             -> cols (C*KH*KW, N*OH*OW)
    col2im(cols, x_shape, KH, KW, stride, pad) -> dx (N, C, H, W)

Row r = (c*KH + i)*KW + j of `cols` holds input channel c seen at kernel offset (i, j);
column q = (n*OH + oh)*OW + ow is output position (oh, ow) of image n:

    cols[r, q] = x[n, c, oh*stride - pad + i, ow*stride - pad + j]     (0 in the padding)

col2im is its adjoint (transpose): every entry goes back to the pixel it was read from, and a
pixel read by several receptive fields (kernel larger than stride) receives the sum of their
gradients: accumulate with `+=`, never `=`.

Plain Python loops are right but slow; NumPy slicing over (i, j) is quick enough to train the
`tiny` model, and `numba.njit` on the loops makes them fast enough for `cifar`
(tinyalex's own `layers/im2col.py` does that to `layers/reference.py`'s loops).
"""

import numpy as np

from layers.reference import out_size
'''


def marker(function, filename):
    """The body that stands where the student writes: the line a NotImplementedError prints."""
    return f'{function} in {filename} is not written yet'


def _blank(source, functions, filename):
    """`source` with the bodies (after each docstring) of `functions` replaced by the marker."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    cuts = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in functions:
            body = node.body
            first = body[1] if ast.get_docstring(node) is not None else body[0]
            indent = " " * first.col_offset
            text = (f"{indent}# Write this: see the module docstring for the maths and the shapes.\n"
                    f"{indent}raise NotImplementedError({marker(node.name, filename)!r})\n")
            cuts.append((first.lineno - 1, node.end_lineno, text))
    missing = set(functions) - {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert not missing, f"{filename} lacks {missing}"      # the exercise list and layers/ agree
    for start, end, text in sorted(cuts, reverse=True):
        lines[start:end] = [text]
    return "".join(lines)


def _absolute_imports(source):
    """The helpers that are not exercises, imported from tinyalex's layers; im2col stays the
    student's own (relative)."""
    return (source.replace("from ._checks import", "from layers._checks import")
                  .replace("from .reference import", "from layers.reference import"))


def exercise_source(name, blank=True):
    """The text of the student's copy of exercise `name` (a key of EXERCISES); blank=False:
    with tinyalex's own bodies (a finished exercise, for the tests)."""
    filename, functions = EXERCISES[name]
    if name == "im2col":                 # tinyalex's im2col.py compiles reference.py's loops
        with open(os.path.join(LAYERS_DIR, "reference.py")) as f:
            reference = f.read()
        tree = ast.parse(reference)
        lines = reference.splitlines(keepends=True)
        parts = [IM2COL_DOC]
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name in functions:
                parts.append("\n\n" + "".join(lines[node.lineno - 1:node.end_lineno]))
        text = "".join(parts)
        if not blank:                   # tinyalex's own: reference.py's loops, compiled
            text += "\n\nfrom numba import njit  # noqa: E402\n\nim2col = njit(im2col)\ncol2im = njit(col2im)\n"
    else:
        with open(os.path.join(LAYERS_DIR, filename)) as f:
            text = _absolute_imports(f.read())
    return _blank(text, functions, filename) if blank else text


def expand(layers):
    """The exercises that `layers` (names of LAYERS; none: all) take, in the building-up order."""
    wanted = set(layers or LAYERS)
    for name in wanted:
        if name not in LAYERS:
            raise TinyAlexError(f"unknown layer {name!r}; choose from {', '.join(LAYERS)}")
    for name in list(wanted):
        wanted.update(COMES_WITH.get(name, ()))
    return [name for name in EXERCISES if name in wanted]


def write_exercises(layers, out_dir):
    """Write the student's copies of `layers` into out_dir; refuses to overwrite any file.
    Returns the paths written."""
    names = expand(layers)
    paths = [os.path.join(out_dir, EXERCISES[name][0]) for name in names]
    taken = [p for p in paths if os.path.exists(p)]
    if taken:
        raise TinyAlexError(f"{taken[0]} exists: exercise never overwrites a student's work "
                            f"(choose another --out, or move the file away)")
    make_out_dir(out_dir)
    for name, path in zip(names, paths):
        text = exercise_source(name).encode()
        with writing(path):
            atomic_write(path, lambda f: f.write(text))
    return paths


# ---- the command ------------------------------------------------------------------------------

def run_exercise(args):
    paths = write_exercises(args.layers, args.out)
    print(f"wrote {len(paths)} files into {args.out}: {', '.join(os.path.basename(p) for p in paths)}")
    print("each forward and backward body raises NotImplementedError until you write it; then:")
    print(f"    python gradcheck.py --layers {args.out}          # check what you wrote, layer by layer")
    print(f"    python train.py --route {args.out} --model tiny   # train on your layers")
    print("the order that builds up, and what each teaches: docs/exercises.md")
    return 0


HELP = "write your own copy of the layers to fill in (then gradcheck.py --layers DIR)"
DESCRIPTION = ("Copy the readable layers into DIR with every forward and backward body replaced "
               "by a 'write this' marker (NotImplementedError); the docstrings keep the maths, "
               "the shapes and the hints. Never overwrites a file.")


def register(subparsers):
    """Add the `exercise` command to an argparse subparsers object."""
    p = subparsers.add_parser("exercise", help=HELP, description=DESCRIPTION, allow_abbrev=False)
    from .argtypes import non_empty_path
    p.add_argument("layers", nargs="*", metavar="LAYER",
                   help=f"the layers to write ({', '.join(LAYERS)}; default all; conv brings im2col.py)")
    p.add_argument("--out", required=True, type=non_empty_path, metavar="DIR", help="the folder to write them into")
    p.set_defaults(func=run_exercise)
