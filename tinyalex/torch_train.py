"""`python -m tinyalex torch-train`: the same recipe trained by PyTorch, on the same images.

tinyalex's accuracy is judged against a PyTorch run of the same recipe. This command is that
run, made like for like: it reads the images, the train/validation split, the shuffled
batches and their augmentation through tinyalex's own loader (`trainer.build_loaders`, so
`--data`, `--val-size`, `--seed` and `--limit-train` mean what they mean for train.py), and
leaves everything else to PyTorch:

    model         torch_twin.torch_model: the same layers, as torch.nn modules
    init          he: torch.nn.init.kaiming_normal_ (nonlinearity "relu", "linear" for fc8),
                  biases 0; torch: PyTorch's default (uniform +-1/sqrt(fan_in)); paper:
                  normal_(0, 0.01), biases 1 where the paper has them; seeded by
                  torch.manual_seed
    dropout       torch.nn.Dropout, PyTorch's random numbers
    loss          torch.nn.functional.cross_entropy(label_smoothing)
    optimizer     torch.optim.SGD(momentum, nesterov, weight_decay), the biases in a
                  parameter group without weight decay unless --bias-decay
    schedule      onecycle: torch.optim.lr_scheduler.OneCycleLR (linear, train.py's warm-up from
                  peak/25, down to peak/25/1e4, momentum not cycled), stepped every batch;
                  step: MultiStepLR, x0.1 after epochs 5 and 8
    average       --ema DECAY: a copy of the network whose parameters follow train.py's
                  moving average (optim.average_decay), updated with torch's in-place
                  operations after every step; validation and the final scores are the
                  average's, and the end of the run scores the weights as trained too

The options and their defaults are train.py's, so `torch-train` with no options runs
train.py's default recipe.

It writes OUT/metrics.csv (the columns of train.py's) and OUT/curves.png after every epoch,
into a run directory kept by train.py's rules (a new directory, locked while the run lives),
and prints test top-1 and top-5 at the end when the data has a test split. It keeps no
checkpoints: it is a measurement, not a model to keep. PyTorch is imported only here.
"""

import argparse
import copy
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

from .errors import TinyAlexError
from .optim import average_decay
from .outfiles import writing
from .words import plural



def register(subparsers):
    """Add the `torch-train` command to an argparse subparsers object."""
    from .argtypes import add_seed_argument, add_threads_argument, number_in, non_empty_path, positive_int
    from .optim import SCHEDULES
    from .options import add_limit_test_argument, add_recipe_arguments
    from .model import MODELS
    from .data import add_data_arguments
    p = subparsers.add_parser(
        "torch-train", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="train the same recipe in PyTorch on the same images and batches (the accuracy anchor)",
        description="\n\n".join(__doc__.split("\n\n")[1:3]))
    p.add_argument("--model", choices=MODELS, default="cifar", help="cifar (default), paper or tiny")
    p.add_argument("--epochs", type=positive_int, default=10, help="epochs to train (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default 128)")
    p.add_argument("--lr", type=number_in(0, low_open=True), default=None,
                   help="onecycle's peak (default 0.05 cifar, 0.02 paper) or step's start (0.01)")
    p.add_argument("--schedule", choices=[s for s in SCHEDULES if s != "plateau"], default="onecycle",
                   help="onecycle (default) or step, as in train.py")
    add_recipe_arguments(p)
    add_data_arguments(p)
    r = p.add_argument_group("run")
    r.add_argument("--out", metavar="DIR", type=non_empty_path, default=None,
                   help="where metrics.csv and curves.png go (default runs/torch-MODEL-TIME)")
    add_seed_argument(r, "the split, the batches and PyTorch's random numbers")
    add_threads_argument(r)
    r.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="train on N images drawn from the training split (quick runs)")
    r.add_argument("--limit-val", type=positive_int, default=None, metavar="N",
                   help="validate on N images drawn from the validation split")
    add_limit_test_argument(r)
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p.set_defaults(func=run_torch_train)


def make_scheduler(torch, opt, name, peak, epochs, steps_per_epoch, warmup):
    """PyTorch's own scheduler for train.py's schedule `name` (onecycle's warm-up a fraction of
    the run, train.py's --warmup), and whether it steps per batch."""
    if name == "onecycle":
        from .optim import OneCycle
        warmup = OneCycle(peak=peak, epochs=epochs, steps_per_epoch=steps_per_epoch, pct_start=warmup).warmup
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=peak, total_steps=epochs * steps_per_epoch,
            pct_start=warmup / (epochs * steps_per_epoch),
            anneal_strategy="linear", div_factor=25.0, final_div_factor=1e4,
            cycle_momentum=False), True
    return torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 8], gamma=0.1), False


def init_weights(torch, net, init, arch):
    """Draw `net`'s parameters as train.py's --init does (model.init_params), with PyTorch's
    own functions."""
    from .model import PAPER_BIAS_ONE, followed_by_relu, layer_plan
    if init == "torch":
        return                                   # the modules' own reset_parameters()
    relu_after = followed_by_relu(arch)
    for name, kind, _ in layer_plan(arch):
        if kind not in ("conv", "dense"):
            continue
        module = getattr(net, name)
        if init == "he":
            torch.nn.init.kaiming_normal_(module.weight, mode="fan_in",
                                          nonlinearity="relu" if name in relu_after else "linear")
            torch.nn.init.zeros_(module.bias)
        else:                                    # paper
            torch.nn.init.normal_(module.weight, 0.0, 0.01)
            torch.nn.init.constant_(module.bias, 1.0 if name in PAPER_BIAS_ONE else 0.0)


def numpy_model(torch, net):
    """`net` seen as scoring.score_loader sees a model: forward(images) -> logits, NumPy in
    and out, dropout off. The scoring (loss, top-1, top-5) is then the same code as train.py's."""
    def forward(x):
        net.eval()
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()
    return SimpleNamespace(forward=forward)


def run_torch_train(args):
    """The run directory is train.py's kind (tinyalex/rundir.py): a new one, locked while the
    run lives, and removed again if the run ends before its first epoch was written."""
    from .rundir import RunDir
    from .torch_twin import import_torch
    torch = import_torch()
    out = args.out or os.path.join("runs", f"torch-{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    with RunDir(out, keeps="metrics.csv") as run_dir:
        run_dir.check_new()
        return _train(torch, args, out)


def _train(torch, args, out):
    from tqdm import tqdm

    from .model import ARCHS
    from .optim import DEFAULT_LR, ONECYCLE_PEAK
    from .scoring import score_loader, score_loader_views, views_line
    from .torch_twin import torch_model
    from .trainer import build_loaders, epoch_line, write_metrics
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data, train, val, test = build_loaders(vars(args))
    peak = args.lr or (ONECYCLE_PEAK[args.model] if args.schedule == "onecycle" else DEFAULT_LR)
    net = torch_model(ARCHS[args.model], data.num_classes)
    init_weights(torch, net, args.init, ARCHS[args.model])
    decayed = [w for name, w in net.named_parameters() if args.bias_decay or not name.endswith(".bias")]
    exempt = [w for name, w in net.named_parameters() if not args.bias_decay and name.endswith(".bias")]
    groups = [{"params": decayed, "weight_decay": args.weight_decay}]
    if exempt:
        groups.append({"params": exempt, "weight_decay": 0.0})
    # (PyTorch refuses Nesterov without momentum; with momentum 0 both rules are plain SGD)
    opt = torch.optim.SGD(groups, lr=peak, momentum=args.momentum,
                          nesterov=args.nesterov and args.momentum > 0)
    average = TorchAverage(torch, net, args.ema) if args.ema else None
    scored = numpy_model(torch, average.net if average else net)      # what validation scores
    scheduler, per_batch = make_scheduler(torch, opt, args.schedule, peak, args.epochs, len(train), args.warmup)
    print(f"data: {data.summary()}")
    print(f"PyTorch {torch.__version__}, {plural(torch.get_num_threads(), 'thread')}: {args.model}, "
          f"{plural(args.epochs, 'epoch')} of {plural(len(train), 'step')}, batch {args.batch_size}, "
          f"{args.schedule} schedule from lr {peak:g}, init {args.init}, label smoothing "
          f"{args.label_smoothing:g}, "
          f"{'Nesterov' if args.nesterov else 'plain'} momentum {args.momentum:g}, weight decay "
          f"{args.weight_decay:g}{'' if args.bias_decay else ' (not on biases)'}"
          f"{f', average of the weights (decay {args.ema:g})' if average else ''}; metrics in {out}")
    rows = []
    for epoch in range(args.epochs):
        net.train()
        loss_sum, correct, seen, seconds = 0.0, 0, 0, 0.0
        bar = tqdm(total=len(train), desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                   dynamic_ncols=True, leave=False, disable=args.no_progress, file=sys.stderr)
        for batch, (x, y) in enumerate(train.epoch(epoch)):
            t0 = time.perf_counter()
            lr = opt.param_groups[0]["lr"]
            images, labels = torch.from_numpy(x), torch.from_numpy(y)
            opt.zero_grad(set_to_none=True)
            logits = net(images)
            loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
            loss.backward()
            opt.step()
            if average is not None:
                average.step(net, epoch * len(train) + batch + 1)
            if per_batch:
                scheduler.step()
            value = loss.item()
            if not np.isfinite(value):
                raise TinyAlexError(f"the loss became {value} at epoch {epoch + 1}; try a lower --lr")
            seconds += time.perf_counter() - t0
            loss_sum += value * len(y)
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(y)
            bar.set_postfix_str(f"loss {loss_sum / seen:.3f} acc {100 * correct / seen:.1f}% "
                                f"{seen / seconds:.0f} img/s lr {lr:.3g}", refresh=False)
            bar.update(1)
        bar.close()
        if not per_batch:
            scheduler.step()
        t0 = time.perf_counter()
        val_loss, val_acc, _ = score_loader(scored, val, desc=None if args.no_progress else "validating") if val is not None else (None, None, None)
        rows.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                     "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
                     "seconds": round(seconds + time.perf_counter() - t0, 3),
                     "img_per_s": round(seen / seconds, 1)})
        with writing(os.path.join(out, "metrics.csv")):
            write_metrics(out, rows, classes=data.num_classes)
        print(epoch_line(rows[-1], args.epochs))
    weights = [(scored, "average" if average else "final")]
    if average is not None:
        weights.append((numpy_model(torch, net), "trained"))
    for split, loader in (("validation", val), ("test", test)):
        if loader is None:
            continue
        for model, which in weights:
            views = score_loader_views(model, loader, desc=None if args.no_progress else f"scoring {split}")
            print(f"{split}: {views_line(views, which)}")
    return 0


class TorchAverage:
    """train.py's moving average of the weights (optim.Average), kept in a copy of the
    network: after step t, a <- d_t a + (1 - d_t) w for every parameter."""

    def __init__(self, torch, net, decay):
        self.torch, self.decay = torch, decay
        self.net = copy.deepcopy(net)

    def step(self, net, t):
        d = average_decay(self.decay, t)
        with self.torch.no_grad():
            for a, w in zip(self.net.parameters(), net.parameters()):
                a.mul_(d).add_(w, alpha=1 - d)
