"""export: the ONNX graph in ONNX Runtime and the state_dict in PyTorch give tinyalex's logits.

Float32 throughout; "agree" means the largest difference is at most 1e-4 of the largest
logit, as for the PyTorch parity tests. A check that cannot fail proves nothing, so one test
shows that the comparison catches LRN's other alpha convention (at a large alpha: at the
paper's 1e-4 the cross-channel term is too small to see), and another that the command
refuses to write an export that fails its check.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from tinyalex import cli, export
from tinyalex.data import load_images
from tinyalex.data.synthetic import CLASSES, make_images
import tinyalex.model as model_module
from tinyalex.model import LRN, build_model
from tinyalex.torch_twin import torch_model

from trained_tiny import MEAN, STD, fitted_tiny, write_checkpoint

TOL = export.CHECK_TOLERANCE


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = fitted_tiny()
    return {"root": root, "model": model, "ckpt": write_checkpoint(root / "tiny.npz", model)}


def run(argv, capsys):
    code = cli.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def onnx_logits(model, x, **kwargs):
    proto = export.onnx_model(model, mean=MEAN, std=STD, classes=CLASSES[:model.num_classes],
                              **kwargs)
    return export.run_onnxruntime(proto.SerializeToString(), x), proto


@pytest.mark.parametrize("name, batch", [("tiny", 2), ("cifar", 2), ("paper", 1)])
def test_onnx_runtime_gives_tinyalex_logits(world, name, batch):
    model = world["model"] if name == "tiny" else build_model(name, 10, seed=1)
    x = export.check_inputs(model, batch=batch, seed=5)
    ours = model.forward(x)
    theirs, proto = onnx_logits(model, x)
    assert theirs.shape == ours.shape and theirs.dtype == np.float32
    assert export.relative_difference(ours, theirs) <= TOL
    # the graph is the plan: no dropout node, groups where the towers split, LRN's alpha x5
    ops = [(n.op_type, n.name) for n in proto.graph.node]
    assert [op for op, _ in ops] == ["Conv", "Relu", "LRN", "MaxPool", "Conv", "Relu", "LRN",
                                     "MaxPool", "Conv", "Relu", "Conv", "Relu", "Conv", "Relu",
                                     "MaxPool", "Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
    attrs = {n.name: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in proto.graph.node}
    assert [attrs[f"conv{i}"]["group"] for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert attrs["lrn1"]["alpha"] == pytest.approx(LRN["alpha"] * LRN["size"])
    assert attrs["lrn1"]["bias"] == pytest.approx(LRN["k"]) and attrs["lrn1"]["size"] == 5
    assert proto.opset_import[0].version == export.OPSET and proto.ir_version == export.IR_VERSION


def _with_lrn_alpha(monkeypatch, alpha):
    """fitted_tiny() with another LRN alpha, in the model and in layer_plan (the export's)."""
    monkeypatch.setattr(model_module, "LRN", dict(model_module.LRN, alpha=alpha))
    return fitted_tiny()


def test_the_comparison_catches_the_other_lrn_alpha_convention(world, monkeypatch):
    """At a large alpha, an LRN node given tinyalex's alpha as is (ONNX divides it by the
    window size again) is caught; multiplied by the size it agrees."""
    model = _with_lrn_alpha(monkeypatch, 0.5)
    x = export.check_inputs(model, seed=6)
    ours = model.forward(x)
    right, proto = onnx_logits(model, x)
    assert export.relative_difference(ours, right) <= TOL
    for node in proto.graph.node:
        if node.op_type == "LRN":
            for a in node.attribute:
                if a.name == "alpha":
                    a.f = 0.5                       # the sum convention, not ONNX's mean one
    wrong = export.run_onnxruntime(proto.SerializeToString(), x)
    assert export.relative_difference(ours, wrong) > 100 * TOL


def test_softmax_output(world):
    model = world["model"]
    x = export.check_inputs(model, seed=7)
    probs, proto = onnx_logits(model, x, softmax=True)
    assert proto.graph.output[0].name == "probabilities"
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert export.relative_difference(export.tinyalex_outputs(model, x, softmax=True), probs) <= TOL


def test_an_even_lrn_window_is_refused():
    with pytest.raises(ValueError, match="odd sizes"):
        export.onnx_lrn_alpha(dict(LRN, size=4))


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------

def test_export_command_checks_writes_and_records_the_preprocessing(world, capsys, tmp_path):
    path = tmp_path / "tiny.onnx"
    code, out, err = run(["export", world["ckpt"], str(path)], capsys)
    assert code == 0, err
    assert "checked: ONNX Runtime and tinyalex agree" in out and "max relative difference" in out
    # What a user writes (README, "Take it elsewhere"): the metadata says how to feed it.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    mean, std = np.array(json.loads(meta["input.mean"])), np.array(json.loads(meta["input.std"]))
    np.testing.assert_allclose(mean, MEAN, rtol=1e-6)
    np.testing.assert_allclose(std, STD, rtol=1e-6)
    assert json.loads(meta["classes"]) == CLASSES and "NCHW" in meta["input.layout"]
    assert session.get_inputs()[0].name == "input" and session.get_inputs()[0].shape[0] == "N"
    rgb, _ = make_images(1, 10, seed=2, size=45)
    photo = tmp_path / "photo.png"
    Image.fromarray(rgb[0]).save(photo)
    image = Image.open(photo).convert("RGB").resize((32, 32), Image.BICUBIC)
    x = ((np.asarray(image) / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    logits = session.run(None, {"input": x})[0]
    ours = world["model"].forward(load_images([str(photo)], 32, MEAN, STD))
    assert export.relative_difference(ours, logits) <= TOL


def test_export_torch_state_dict_loads_into_the_twin(world, capsys, tmp_path):
    path = tmp_path / "tiny.pt"
    code, out, err = run(["export", world["ckpt"], str(path), "--format", "torch"], capsys)
    assert code == 0, err
    assert "checked: PyTorch and tinyalex agree" in out
    model = world["model"]
    net = torch_model(model.arch, model.num_classes)
    net.load_state_dict(torch.load(path, weights_only=True))
    net.eval()
    x = export.check_inputs(model, seed=8)
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    assert export.relative_difference(model.forward(x), theirs) <= TOL


def test_export_refuses_an_export_that_fails_its_check(world, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "onnx_lrn_alpha", lambda opts: 1e4 * opts["alpha"] * opts["size"])
    path = tmp_path / "wrong.onnx"
    code, out, err = run(["export", world["ckpt"], str(path)], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("error: ONNX Runtime disagrees with tinyalex") and "nothing written" in err
    assert not path.exists()


def test_without_onnxruntime_the_export_is_written_unchecked(world, capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # `import onnxruntime` fails
    code, out, err = run(["export", world["ckpt"], str(tmp_path / "a.onnx")], capsys)
    assert code == 0, err
    assert "not checked: onnxruntime is not installed" in out and (tmp_path / "a.onnx").exists()
    code, out, err = run(["export", world["ckpt"], str(tmp_path / "b.onnx"), "--check"], capsys)
    assert code == 2 and err.startswith("error: onnxruntime is not installed")
    assert not (tmp_path / "b.onnx").exists()


def test_export_bad_input(world, capsys, tmp_path, monkeypatch):
    cases = [
        (["export", str(tmp_path / "none.npz"), str(tmp_path / "m.onnx")], "checkpoint not found"),
        (["export", world["ckpt"], str(tmp_path / "no" / "m.onnx")], "does not exist"),
        (["export", world["ckpt"], str(tmp_path)], "is a directory"),
        (["export", world["ckpt"], str(tmp_path / "m.pt"), "--format", "torch", "--softmax"],
         "--softmax applies to --format onnx only"),
    ]
    for argv, words in cases:
        code, out, err = run(argv, capsys)
        assert code == 2 and out == "", argv
        assert err.startswith("error: ") and words in err and err.count("\n") == 1, (argv, err)
    monkeypatch.setitem(sys.modules, "onnx", None)            # `import onnx` fails
    code, out, err = run(["export", world["ckpt"], str(tmp_path / "m.onnx")], capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err == 'error: the onnx package is not installed; export needs it: pip install -e ".[onnx]"\n'
    assert list(tmp_path.iterdir()) == []


def test_a_real_process_without_onnx_prints_one_line(world, tmp_path):
    """No traceback from a real `python -m tinyalex export` when onnx is missing."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = ("import sys; sys.modules['onnx'] = None; from tinyalex.cli import main; "
              f"sys.exit(main(['export', {world['ckpt']!r}, {str(tmp_path / 'm.onnx')!r}]))")
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=repo, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ('error: the onnx package is not installed; export needs it: '
                           'pip install -e ".[onnx]"\n')
