"""`python -m tinyalex bench` on the tiny model: the report's fields, the per-layer walk, and
that the PyTorch rival is the same network (same logits and gradients for the same weights)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyalex import _runtime, bench, cli
import tinyalex.model as model_module
from tinyalex.model import ARCHS, build_model, layer_plan
from tinyalex.torch_twin import torch_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_LAYERS = ["conv1", "relu1", "lrn1", "pool1", "conv2", "relu2", "lrn2", "pool2",
               "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool5",
               "drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8", "loss", "update"]
QUICK = ["bench", "--model", "tiny", "--batch-size", "4", "--steps", "2", "--warmup", "0"]


@pytest.fixture
def keep_torch_threads():
    """--vs-torch sets PyTorch's thread count; give the other tests theirs back."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_json(capsys, *extra):
    assert cli.main(QUICK + ["--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_report_without_torch(capsys):
    out = run_json(capsys)
    assert (out["model"], out["batch"], out["steps"]) == ("tiny", 4, 2)
    assert out["threads"] >= 1
    assert len(out["tinyalex_train_times_s"]) == 2 and len(out["tinyalex_eval_times_s"]) == 2
    assert out["tinyalex_train_img_s"] == pytest.approx(4 / np.median(out["tinyalex_train_times_s"]))
    assert out["tinyalex_eval_img_s"] == pytest.approx(4 / np.median(out["tinyalex_eval_times_s"]))
    assert out["tinyalex_train_img_s"] > 0 and out["tinyalex_eval_img_s"] > 0
    assert out["cold_first_step_s"] > 0
    for field in ("torch_train_img_s", "torch_eval_img_s", "train_ratio", "eval_ratio"):
        assert out[field] is None
    assert "layers" not in out
    runtime = out["runtime"]
    assert runtime["kernel_threads"] >= 1
    if runtime["blas"] is not None:            # threadpoolctl installed (the test extra has it)
        assert any(pool["internal_api"] for pool in runtime["blas"])
    assert out["peak_rss_bytes"] is None or out["peak_rss_bytes"] > 10 * 2**20


def test_readable_route_is_timed_beside_the_fast_one(capsys):
    out = run_json(capsys, "--layers")                      # --route both, the default
    assert out["route"] == "fast"
    for kind in ("train", "eval"):
        fast, readable = out[f"tinyalex_{kind}_img_s"], out[f"readable_{kind}_img_s"]
        assert fast > 0 and readable > 0 and len(out[f"readable_{kind}_times_s"]) == 2
        assert out[f"{kind}_fast_over_readable"] == pytest.approx(fast / readable, rel=1e-12)
    rows = out["layers"]
    assert [row["layer"] for row in rows] == TINY_LAYERS
    convs = [row for row in rows if row["layer"].startswith("conv")]
    assert all(row["readable_backward_ms"] > 0 for row in convs)
    # the readable route runs its ReLUs on their own; the fast route fuses them into the conv
    relus = [row for row in rows if row["layer"] in ("relu1", "relu2")]
    assert all(row["readable_forward_ms"] > 0 and row["tinyalex_forward_ms"] < row["readable_forward_ms"]
               for row in relus)


@pytest.mark.parametrize("route", ["fast", "readable"])
def test_one_route_alone(capsys, route):
    out = run_json(capsys, "--route", route)
    assert out["route"] == route and out["tinyalex_train_img_s"] > 0
    assert "readable_train_img_s" not in out and "train_fast_over_readable" not in out


def test_vs_torch_ratios_and_layer_table(capsys, keep_torch_threads):
    out = run_json(capsys, "--vs-torch", "--layers")
    for kind in ("train", "eval"):
        tx, pt = out[f"tinyalex_{kind}_img_s"], out[f"torch_{kind}_img_s"]
        assert tx > 0 and pt > 0
        assert out[f"{kind}_ratio"] == pytest.approx(tx / pt, rel=1e-12)
    assert out["torch_first_step_s"] > 0
    rows = out["layers"]
    assert [row["layer"] for row in rows] == TINY_LAYERS
    for who in ("tinyalex", "torch"):
        assert all(row[f"{who}_forward_ms"] >= 0 for row in rows)
        assert sum(row[f"{who}_share"] for row in rows) == pytest.approx(1.0)
        convs = [row for row in rows if row["layer"].startswith("conv")]
        assert all(row[f"{who}_backward_ms"] > 0 for row in convs)
    # one-call rows: tinyalex's loss (loss and gradient together) and both SGD updates
    assert rows[-2]["tinyalex_backward_ms"] is None and rows[-2]["torch_backward_ms"] >= 0
    assert rows[-1]["tinyalex_backward_ms"] is None and rows[-1]["torch_backward_ms"] is None


def test_text_report_names_every_layer(capsys):
    assert cli.main(QUICK + ["--layers"]) == 0
    text = capsys.readouterr().out
    first_words = {line.split()[0] for line in text.splitlines() if line.strip()}
    assert set(TINY_LAYERS) <= first_words
    assert "training" in first_words and "evaluation" in first_words
    assert "Numba kernels: " in text and " threads" in text


@pytest.mark.parametrize("route", ["fast", "readable"])
def test_timed_route_times_every_layer_and_changes_nothing(route):
    """The per-layer timings come from the model's own passes through a timed route: every
    layer gets a time, and the step computes the same numbers as without the timers."""
    model = build_model("tiny", seed=3, route=route)
    x, y = bench.random_batch(model.input_shape, 10, 5, seed=4)
    ops = model.ops
    model.ops = timed = bench.TimedRoute(ops)
    logits, tape = model.forward_tape(x, train=True, rng=np.random.default_rng(7))
    fwd = timed.per_step(model.plan)
    _, dlogits = ops.softmax_cross_entropy(logits, y)
    grads, _ = model.backward_tape(tape, dlogits)
    bwd = timed.per_step(model.plan[::-1])
    model.ops = ops
    names = [n for n, kind, _ in model.plan if kind != "flatten"]
    assert list(fwd) == names and list(bwd) == names[::-1]
    assert all(t >= 0 for t in list(fwd.values()) + list(bwd.values()))
    want = model.loss(x, y, rng=np.random.default_rng(7))
    assert list(grads) == list(want.grads)
    for name in want.grads:
        np.testing.assert_array_equal(grads[name], want.grads[name], err_msg=name)
    one_round = bench.tinyalex_layer_round(model, x, y, seed=7)
    fwd, bwd = one_round()
    layers = [n for n, kind, _ in layer_plan(model.arch) if kind != "flatten"]
    assert list(fwd) == layers + ["loss", "update"] and list(bwd) == layers
    fused = route == "fast"
    assert (fwd["relu1"] == bwd["relu1"] == 0.0) == fused and fwd["conv1"] > 0


@pytest.mark.parametrize("alpha", [1e-4, 0.05])
@pytest.mark.parametrize("name", ["tiny", "cifar"])
def test_torch_rival_is_the_same_network(name, alpha, monkeypatch):
    """At the paper's alpha=1e-4 the LRN barely changes anything, so PyTorch's alpha/n
    convention could be got wrong unnoticed: a large alpha (in both models) makes it count."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(model_module, "LRN", dict(model_module.LRN, alpha=alpha))
    model = build_model(name, seed=1)
    batch = 3 if name == "tiny" else 1
    x, y = bench.random_batch(model.input_shape, 10, batch, seed=2)
    net = torch_model(model.arch, 10, model.params)
    names = [n for n, kind, _ in layer_plan(model.arch)]
    assert [n for n, _ in net.named_children()] == names
    net.eval()
    xt = torch.from_numpy(x)
    with torch.no_grad():
        want = net(xt).numpy()
    got = model.forward(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())

    if name == "cifar":
        return                                   # the gradients: on the tiny model only
    # gradients too, dropout off in both (its masks come from different generators)
    result = model.loss(x, y, train=False)
    loss, grads = result.loss, result.grads
    out = torch.nn.functional.cross_entropy(net(xt), torch.from_numpy(y))
    out.backward()
    assert loss == pytest.approx(out.item(), rel=1e-5)
    for key, g in grads.items():
        layer, kind = key.split(".")
        tg = getattr(net, layer).weight.grad if kind == "w" else getattr(net, layer).bias.grad
        np.testing.assert_allclose(g, tg.numpy(), rtol=1e-3, atol=1e-4 * np.abs(tg.numpy()).max(),
                                   err_msg=key)


def test_lrn_module_uses_the_papers_alpha():
    pytest.importorskip("torch")
    net = torch_model(ARCHS["tiny"], 10)
    assert (net.lrn1.size, net.lrn1.alpha, net.lrn1.beta, net.lrn1.k) == (5, 5e-4, 0.75, 2.0)


def test_vs_torch_without_torch_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)        # makes `import torch` fail
    assert cli.main(QUICK + ["--vs-torch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:")
    assert 'pip install -e ".[torch]"' in err


def test_rss_only_refuses_the_comparison(capsys):
    assert cli.main(QUICK + ["--rss-only", "tinyalex", "--vs-torch"]) == 2
    assert "--rss-only" in capsys.readouterr().err


def test_rss_only_tinyalex_never_loads_torch():
    code = ("import json, sys; from tinyalex import cli; "
            f"rc = cli.main({QUICK + ['--rss-only', 'tinyalex', '--json']!r}); "
            "assert rc == 0; assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["only"] == "tinyalex" and out["train_img_s"] > 0
    assert out["peak_rss_bytes"] is None or out["peak_rss_bytes"] > 10 * 2**20


def test_coretype_warning_only_when_set():
    assert bench.coretype_warning({}) is None
    message = bench.coretype_warning({"OPENBLAS_CORETYPE": "Haswell"})
    assert "OPENBLAS_CORETYPE=Haswell" in message and "env -u OPENBLAS_CORETYPE" in message


IMPORTS_PROBE = """
import sys
from tinyalex.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(" ".join(m for m in ("tinyalex.data", "PIL", "tqdm", "tinyalex.bench") if m in sys.modules))
"""


@pytest.mark.parametrize("argv, expected", [
    (["bench", "--help"], "tinyalex.bench"),                          # bench skips the data pipeline
    (["train", "--help"], "tinyalex.data PIL tqdm"),
    (["--help"], "tinyalex.data PIL tqdm tinyalex.bench"),            # help lists every command
])
def test_a_command_imports_only_what_it_uses(argv, expected):
    out = subprocess.run([sys.executable, "-c", IMPORTS_PROBE] + argv, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.split("\n")[-2] == expected


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])        # utime + stime


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_busy_cores_spin_only_when_resumed_and_are_gone_after():
    with bench.BusyCores(1) as busy:
        pid = busy.procs[0].pid
        paused = _cpu_ticks(pid)
        time.sleep(0.3)
        assert _cpu_ticks(pid) - paused <= 2               # paused: no CPU
        busy.resume()
        start = _cpu_ticks(pid)
        time.sleep(0.5)
        assert _cpu_ticks(pid) - start >= 15               # resumed: a core's worth (ticks of 10 ms)
        busy.pause()
    assert not _alive(pid)


@pytest.mark.parametrize("paused", [False, True])
def test_a_spinner_ends_when_its_bench_dies(paused):
    # the bench killed outright (no chance to clean up): its spinners must not spin on
    code = ("import os, sys; from tinyalex import bench; b = bench.BusyCores(1); "
            f"{'' if paused else 'b.resume(); '}print(b.procs[0].pid, flush=True); os._exit(0)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, start_new_session=True)
    pid = int(out.stdout.split()[0])
    deadline = time.time() + 10
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_busy_report_has_idle_and_busy_rounds(capsys, monkeypatch):
    phases = []
    real = bench.BusyCores

    class Recorded(real):
        def pause(self):
            phases.append("pause")
            super().pause()

        def resume(self):
            phases.append("resume")
            super().resume()
    monkeypatch.setattr(bench, "BusyCores", Recorded)
    out = run_json(capsys, "--busy", "1")
    busy = out["busy"]
    assert busy["processes"] == 1
    for kind in ("train", "eval"):
        for who in ("tinyalex", "readable"):
            assert len(out[f"{who}_{kind}_times_s"]) == 2 and len(busy[f"{who}_{kind}_times_s"]) == 2
            assert busy[f"{who}_{kind}_share_of_idle"] == pytest.approx(
                busy[f"{who}_{kind}_img_s"] / out[f"{who}_{kind}_img_s"])
    # every round: idle (paused), then busy (resumed); paused again at the end
    assert phases == ["pause"] + ["pause", "resume"] * 2 + ["pause"]
    assert cli.main(QUICK + ["--busy", "1"]) == 0
    text = capsys.readouterr().out
    assert "1 other process keeping a core busy" in text and "training, busy/idle" in text


def test_busy_refuses_the_layer_table(capsys):
    assert cli.main(QUICK + ["--busy", "1", "--layers"]) == 2
    assert "drop --layers" in capsys.readouterr().err


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_command_takes_threads(command):
    out = subprocess.run([sys.executable, "-m", "tinyalex", command, "--threads", "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert "--threads: must be at least 1, got 0" in out.stderr, out.stderr


def test_threads_reach_the_kernels_and_blas(capsys):
    from layers.fast import threads
    before = threads.get_num_threads()
    try:
        out = run_json(capsys, "--threads", "1")
        assert out["threads"] == 1 and out["runtime"]["kernel_threads"] == 1
        if out["runtime"]["blas"]:
            assert {pool["num_threads"] for pool in out["runtime"]["blas"]} == {1}
    finally:
        threads.set_num_threads(before)
        _runtime.set_threads(before)
