"""The student's route: `exercise` writes the layers to fill in, `gradcheck.py --layers DIR`
checks them (and catches the classic bugs), `train.py --route DIR` trains on them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyalex import gradcheck
from tinyalex.cli import main as cli_main, train_main
from tinyalex.errors import TinyAlexError
from tinyalex.exercise import EXERCISES, LAYERS, exercise_source
from tinyalex.model import build_model
from tinyalex.student import check_student, format_reports, load_student_route

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def exercise_folder(path, *layers):
    assert cli_main(["exercise", *layers, "--out", str(path)]) == 0
    return str(path)


def finished(path, exercises=tuple(EXERCISES)):
    """A folder with tinyalex's own bodies in the student's copies (a finished exercise)."""
    os.makedirs(path, exist_ok=True)
    for name in exercises:
        with open(os.path.join(path, EXERCISES[name][0]), "w") as f:
            f.write(exercise_source(name, blank=False))
    return str(path)


def plant(folder, filename, old, new):
    path = os.path.join(folder, filename)
    with open(path) as f:
        text = f.read()
    assert old in text, (filename, old)
    with open(path, "w") as f:
        f.write(text.replace(old, new))


def check(folder):
    reports = check_student(folder, gradcheck.FAMILIES, gradcheck.check_net, seed=0)
    return {r.name: r for r in reports}, format_reports(reports)


def test_every_exercise_raises_a_named_not_implemented_error(tmp_path):
    folder = exercise_folder(tmp_path / "mine")
    assert sorted(os.listdir(folder)) == sorted(f for f, _ in EXERCISES.values())
    sys.path.insert(0, folder)
    try:
        for name, (filename, functions) in EXERCISES.items():
            namespace = {}
            with open(os.path.join(folder, filename)) as f:
                source = f.read()
            assert '"""' in source.split("\n", 1)[0]                # the docstring stays
            exec(compile(source.replace("from .im2col", "from layers.im2col"), filename, "exec"),
                 namespace)
            for function in functions:
                with pytest.raises(NotImplementedError, match=f"{function} in {filename} is not written yet"):
                    namespace[function](*([None] * namespace[function].__code__.co_argcount))
    finally:
        sys.path.remove(folder)
    with open(os.path.join(folder, "pool.py")) as f:             # the hints are in the docstrings
        assert "+=" in f.read().split('"""')[1]


def test_exercise_never_overwrites_and_names_the_layers(tmp_path, capsys):
    folder = exercise_folder(tmp_path / "mine", "conv")
    assert sorted(os.listdir(folder)) == ["conv.py", "im2col.py"]      # conv brings im2col
    with open(os.path.join(folder, "conv.py"), "a") as f:
        f.write("# my work\n")
    before = open(os.path.join(folder, "conv.py")).read()
    capsys.readouterr()
    assert cli_main(["exercise", "conv", "--out", folder]) == 2
    assert "never overwrites" in capsys.readouterr().err
    assert open(os.path.join(folder, "conv.py")).read() == before
    assert cli_main(["exercise", "softmax", "--out", str(tmp_path / "other")]) == 2
    assert "unknown layer 'softmax'" in capsys.readouterr().err


def test_unwritten_layers_are_reported_as_not_written_not_failed(tmp_path, capsys):
    folder = exercise_folder(tmp_path / "mine")
    finished(folder, ("relu",))
    reports, text = check(folder)
    assert reports["relu"].status == "passed"
    assert all(reports[layer].status == "not written yet" for layer in LAYERS if layer != "relu")
    assert reports["net"].status == "passed"          # relu theirs, the rest tinyalex's
    assert "lrn      not written yet (lrn_forward, lrn_backward)" in text
    assert gradcheck.main(["--layers", folder]) == 0
    assert "1 of 7 layers written, 0 failing" in capsys.readouterr().out


def test_a_finished_exercise_passes_the_checker_and_computes_what_tinyalex_does(tmp_path):
    folder = finished(tmp_path / "mine")
    reports, text = check(folder)
    assert [r.status for r in reports.values()] == ["passed"] * 8, text
    assert all(r.rows for r in reports.values())
    route = load_student_route(folder)
    assert route.theirs == list(EXERCISES) and not route.unwritten
    assert route.conv_forward.__module__.startswith("tinyalex_student_")
    mine = build_model("tiny", init="he", seed=1, route=folder)
    readable = build_model("tiny", init="he", seed=1, route="readable")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    y = np.array([1, 2, 3])
    a = mine.loss(x, y, rng=np.random.default_rng(5))
    b = readable.loss(x, y, rng=np.random.default_rng(5))
    assert a.loss == b.loss
    for name in b.grads:
        np.testing.assert_array_equal(a.grads[name], b.grads[name], err_msg=name)


# (layer, file, the correct line, the bug, what the report must say)
BUGS = [
    ("lrn", "lrn.py", "return diagonal - 2 * alpha * beta * x * cross", "return diagonal",
     "dx (all 280) is"),
    ("conv", "im2col.py", "dx[n, c, ih, iw] += cols", "dx[n, c, ih, iw] = cols", "dx ("),
    ("pool", "pool.py", "np.add.at(dx, (planes, cache.argmax.reshape(N * C, -1)), dout.reshape(N * C, -1))",
     "dx[planes, cache.argmax.reshape(N * C, -1)] = dout.reshape(N * C, -1)", "dx ("),
    ("conv", "conv.py", "db = dout.sum(axis=(0, 2, 3))", "db = dout.sum(axis=(0, 2))[:, 0]", "db ("),
    ("dropout", "dropout.py", "    out *= x.dtype.type(scale)\n", "", "dropout_forward out"),
    ("loss", "loss.py", "shifted = logits - logits.max(axis=1, keepdims=True)", "shifted = logits",
     "softmax_cross_entropy on logits of about +-400"),
    ("dense", "dense.py", "dw = dout.T @ x", "dw = x.T @ dout", "dw shape (7, 5) != (5, 7)"),
]


@pytest.mark.parametrize("layer, filename, good, bad, said", BUGS,
                         ids=["lrn-cross-term", "col2im-assign", "pool-assign", "conv-db-axes",
                              "dropout-unscaled", "softmax-no-shift", "dense-dw-transposed"])
def test_the_checker_catches_classic_student_bugs(tmp_path, layer, filename, good, bad, said):
    folder = finished(tmp_path / "mine")
    plant(folder, filename, good, bad)
    reports, text = check(folder)
    assert reports[layer].status == "failed", text
    others = [name for name in LAYERS if name != layer]
    assert all(reports[name].status == "passed" for name in others), text
    block = text.split(f"\n{layer} ", 1)[1].split("\nnet ")[0] if not text.startswith(layer) else text
    assert said in block and "the usual causes:" in block, block


def test_a_broken_file_is_one_line_naming_the_file_and_the_function(tmp_path):
    folder = finished(tmp_path / "mine")
    plant(folder, "lrn.py", "def lrn_backward(dout, cache):", "def lrn_backward(dout, cache)")
    result = subprocess.run([sys.executable, "gradcheck.py", "--layers", folder], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "lrn.py, line" in result.stderr and "syntax error" in result.stderr

    other = finished(tmp_path / "other")
    plant(other, "dense.py", "def dense_backward(", "def dense_backwards(")
    with pytest.raises(TinyAlexError, match=r"dense.py has no function dense_backward"):
        load_student_route(other)

    third = finished(tmp_path / "third")
    plant(third, "relu.py", "import numpy as np", "import numpy as np\n1 / 0")
    with pytest.raises(TinyAlexError, match=r"relu.py: importing it failed: ZeroDivisionError.*\(line 10\)"):
        load_student_route(third)


def test_loading_a_folder_runs_only_its_layer_files(tmp_path):
    folder = exercise_folder(tmp_path / "mine", "relu")
    touched = tmp_path / "touched"
    with open(os.path.join(folder, "notes.py"), "w") as f:
        f.write(f"open({str(touched)!r}, 'w').close()\n")
    route = load_student_route(folder)
    assert not touched.exists()
    assert route.theirs == [] and route.unwritten == {"relu": ["relu_forward", "relu_backward"]}


@pytest.mark.parametrize("written, said", [
    (("relu", "dense", "loss"), "relu, dense, loss; tinyalex's readable ones: dropout, pool, lrn, conv"),
    (tuple(EXERCISES), "relu, dense, loss, dropout, pool, lrn, conv; tinyalex's readable ones: none"),
], ids=["some", "all"])
def test_train_on_the_students_layers_says_whose_they_are(data, tmp_path, capsys, written, said):
    folder = exercise_folder(tmp_path / "mine")
    finished(folder, written)
    out = str(tmp_path / "run")
    assert train_main(["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                       "--val-size", "30", "--batch-size", "15", "--out", out, "--no-progress",
                       "--init", "he", "--lr", "0.02", "--epochs", "2", "--route", folder]) == 0
    text = capsys.readouterr().out
    assert f"layers: yours ({os.path.realpath(folder)}): {said}" in text
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["route"] == os.path.realpath(folder)
    with open(os.path.join(out, "metrics.csv")) as f:
        losses = [float(line.split(",")[1]) for line in f.readlines()[1:]]
    assert losses[1] < losses[0]                     # it learns


def test_a_run_whose_config_says_impl_resumes_on_that_route(data, tmp_path, capsys):
    """Runs written before the option was called --route stored "impl"; resume reads it."""
    from tinyalex.checkpoint import load_checkpoint, save_checkpoint
    out = str(tmp_path / "run")
    common = ["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
              "--val-size", "30", "--batch-size", "15", "--no-progress"]
    assert train_main(common + ["--out", out, "--epochs", "1", "--impl", "readable"]) == 0
    path = os.path.join(out, "last.npz")
    ckpt = load_checkpoint(path)
    config = dict(ckpt.meta["config"])
    config["impl"] = config.pop("route")
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format_version", "tinyalex_version")}
    save_checkpoint(path, params=ckpt.params, optimizer=ckpt.optimizer, arrays=ckpt.arrays,
                    meta=dict(meta, config=config))
    capsys.readouterr()
    assert train_main(["--resume", out, "--no-progress"]) == 0
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["route"] == "readable"      # not the default, fast
