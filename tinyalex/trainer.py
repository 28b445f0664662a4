"""The training loop: data in, SGD steps, a run directory out.

A run directory holds:

    config.json   the options of the run
    metrics.csv   one row per epoch (train/val loss and accuracy, lr, seconds, images/s; with
                  --val-flip the validation accuracy with flip TTA too)
    curves.png    loss and accuracy per epoch, redrawn after every epoch
    last.npz      the latest checkpoint: written at every epoch end and every --save-every
                  minutes mid-epoch, and on Ctrl-C or SIGTERM
    best.npz      the checkpoint with the best validation accuracy so far

Weight averaging (--ema DECAY). The run keeps a moving average of its weights
(optim.Average) beside the weights it trains; validation, best.npz and the final scores are
the average's, and a checkpoint holds the average as its parameters (what evaluate, predict
and export load) and the trained weights under train/ (what a resume goes on from).

(tinyalex/rundir.py decides which run may write into a directory.)

Exact resumption. Every random draw of a step is a pure function of its position: the data
loader's shuffle and augmentation of (seed, epoch, batch), the dropout masks of
(seed, epoch, batch) below. A checkpoint therefore only has to store the position (epoch,
batch), the parameters, the momentum buffers, the schedule's state and the running sums of the
epoch in progress; a resumed run then takes the very same steps as an uninterrupted one. It
also stores a fingerprint of the training and validation images, so that a resume on other
images (of the same classes, even of the same number) is refused.

Divergence. A non-finite state is never saved: the run stops when the training loss or
the validation loss is not finite, or a parameter is not, and says which file holds the
last good state. A resume may lower the learning rate (`--resume DIR --lr X`): the rest of
the schedule is scaled by X over the run's old --lr, and config.json lists the change.
"""

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from . import __version__
from .checkpoint import (describe_position, load_model_checkpoint, read_meta,
                         save_checkpoint)
from .data import BatchLoader, load_dataset, subset
from .errors import TinyAlexError
from .outfiles import atomic_write, writing
from .model import ARCHS, build_model
from .optim import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, ONECYCLE_PEAK, SGD, Average, make_schedule
from .pictures import plot_curves
from .processes import OneProcess
from .scoring import score_loader, score_loader_views
from .words import plural

METRICS_FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "img_per_s",
                  "val_acc_flip"]
IMAGE_SIZE = {name: arch.input_shape[1] for name, arch in ARCHS.items()}   # square inputs
DROPOUT_STREAM = 2     # the loader uses streams 0 (shuffle) and 1 (augmentation) of the seed


class TrainingError(TinyAlexError):
    """The run cannot go on (a non-finite loss, an incompatible resume)."""


@dataclass
class Progress:
    """Where the run is, and the running sums of the epoch in progress."""
    epoch: int = 0          # epochs completed
    batch: int = 0          # batches completed in the epoch in progress
    loss_sum: float = 0.0   # sum over the epoch's images of the training loss
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0    # training time spent in the epoch so far
    metrics: list = field(default_factory=list)
    best_val_acc: float = -1.0


def build_loaders(config):
    """The dataset and its loaders for a run's options (a config dict):
    (data, train loader, validation loader or None, test loader or None)."""
    seed = config["seed"]
    data = load_dataset(config["data"], data_dir=config["data_dir"], val_size=config["val_size"],
                        seed=seed, skip_bad_images=config["skip_bad_images"])
    train_x, train_y = subset(data.train_x, data.train_y, config["limit_train"], seed, "train")
    val_x, val_y = subset(data.val_x, data.val_y, config["limit_val"], seed, "val")
    common = dict(batch_size=config["batch_size"], image_size=IMAGE_SIZE[config["model"]],
                  mean=data.mean, std=data.std, seed=seed)
    train = BatchLoader(train_x, train_y, train=True, augment=config["augment"],
                        cutout=config["cutout"], pca=(data.pca_eigval, data.pca_eigvec), **common)
    val = BatchLoader(val_x, val_y, train=False, **common) if len(val_y) else None
    test = None
    if data.test_x is not None and len(data.test_y):
        test_x, test_y = subset(data.test_x, data.test_y, config.get("limit_test"), seed, "test")
        test = BatchLoader(test_x, test_y, train=False, **common)
    return data, train, val, test


def data_fingerprint(*arrays):
    """A short hash of the training and validation images and labels: a resume checks that
    it goes on with the very images the run started with."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


def base_lr(config):
    """The --lr a run's schedule is built from: the option, else the schedule's default."""
    if config["lr"] is not None:
        return config["lr"]
    return ONECYCLE_PEAK[config["model"]] if config["schedule"] == "onecycle" else DEFAULT_LR


def write_metrics(out_dir, rows, *, classes=None):
    """OUT_DIR/metrics.csv (a row per epoch, METRICS_FIELDS) and OUT_DIR/curves.png, atomically.

    classes: how many classes the run learns, for the chance line of curves.png (None: no line).
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRICS_FIELDS})
    text = buf.getvalue()
    atomic_write(os.path.join(out_dir, "metrics.csv"), lambda f: f.write(text.encode()))
    plot_curves(rows, os.path.join(out_dir, "curves.png"),
                chance=1 / classes if classes else None)


def epoch_line(row, epochs):
    """The line an epoch ends with (train.py and torch-train), short enough not to wrap at 80
    columns: epoch, training loss and accuracy, validation loss and accuracy, seconds, images
    per second (metrics.csv keeps every figure in full)."""
    val = (f"val {row['val_loss']:.3f} {100 * row['val_acc']:.2f}%" if row["val_acc"] is not None
           else "no validation")
    return (f"epoch {row['epoch']:3d}/{epochs}  train loss {row['train_loss']:.3f} acc "
            f"{100 * row['train_acc']:.2f}%  {val}  {row['seconds']:.0f}s "
            f"{row['img_per_s']:.0f} img/s")


def dropout_rng(seed, epoch, batch):
    return np.random.default_rng([seed, DROPOUT_STREAM, epoch, batch])


class Run:
    """One training run: its options, data, model, optimizer, schedule and run directory."""

    def __init__(self, config, out_dir, resume_from=None, log=print, processes=None):
        self.config = config
        # this process alone, or an MPI job: towers or data parallel (tinyalex/processes.py)
        self.processes = OneProcess() if processes is None else processes
        self.out_dir = out_dir
        self.log = log
        self.config_pending = False    # True: write config.json with the first save (train_command)
        self.data, self.train_loader, self.val_loader, self.test_loader = build_loaders(config)
        config["val_size"] = len(self.data.val_y)     # the default resolved, for config.json
        if config["schedule"] == "plateau" and self.val_loader is None:
            raise TrainingError("--schedule plateau watches the validation accuracy: use --val-size > 0")
        data = self.data
        self.image_size = IMAGE_SIZE[config["model"]]
        val = self.val_loader
        self.fingerprint = data_fingerprint(self.train_loader.images, self.train_loader.labels,
                                            *((val.images, val.labels) if val else ()))
        present = np.unique(self.train_loader.labels)
        if len(present) < 2:
            print(f"tinyalex: warning: every training image is of class "
                  f"{data.classes[present[0]]!r}: the model can only learn to answer that, and "
                  f"its accuracy of 100% says nothing", file=sys.stderr)

        route = config.get("route", "fast")
        self.model = self.processes.wrap(build_model(config["model"], data.num_classes,
                                                     init=config["init"], seed=config["seed"],
                                                     route=route))
        biases = [k for k in self.model.params if k.endswith(".b")]
        self.sgd = SGD(self.model.params, momentum=config["momentum"],
                       weight_decay=config["weight_decay"], nesterov=config["nesterov"],
                       no_decay=() if config["bias_decay"] else biases, route=route)
        self.average = (Average(self.model.params, config["ema"], route=route)
                        if config["ema"] else None)
        config["lr"] = base_lr(config)           # the default resolved, for config.json
        self.schedule = make_schedule(config["schedule"], lr=config["lr"], epochs=config["epochs"],
                                      steps_per_epoch=len(self.train_loader),
                                      patience=config["patience"], model=config["model"],
                                      warmup=config["warmup"])
        self.progress = Progress()
        if resume_from is not None:
            self._restore(resume_from)

    # --- checkpoints ------------------------------------------------------------------
    def _meta(self):
        progress = self.progress
        return {"model": self.config["model"], "num_classes": self.model.num_classes,
                "classes": self.data.classes, "image_size": self.image_size,
                "init": self.config["init"], "config": self.config, "epoch": progress.epoch,
                "batch": progress.batch, "schedule": self.schedule.state_dict(),
                "metrics": progress.metrics, "best_val_acc": progress.best_val_acc,
                "running": {"loss_sum": progress.loss_sum, "correct": progress.correct,
                            "seen": progress.seen, "seconds": progress.seconds},
                "data": {"train": len(self.train_loader.labels),
                         "val": len(self.val_loader.labels) if self.val_loader else 0,
                         "fingerprint": self.fingerprint}}

    def save(self, name):
        """Write OUT/name; a state with a non-finite parameter or velocity stops the run instead."""
        for group, arrays in (("parameter", self.model.params), ("velocity", self.sgd.state_dict())):
            for key, value in arrays.items():
                if not np.isfinite(value).all():
                    raise self._diverged(f"the {group} {key} is no longer finite")
        data = self.data
        trained = None
        if self.average is None:
            params, optimizer = self.processes.full_state(self.model.params, self.sgd.state_dict())
        else:                                   # the average is what the run scores
            params, optimizer = self.processes.full_state(self.average.state_dict(), self.sgd.state_dict())
            trained, _ = self.processes.full_state(self.model.params, {})
        if not self.processes.is_root:          # (every process calls full_state above)
            return
        if self.config_pending:                 # a resumed run's options, with its first save
            write_config(self.out_dir, self.config)
            self.config_pending = False
        path = os.path.join(self.out_dir, name)
        with writing(path):                     # a full disk: one line, and the run resumes
            save_checkpoint(path, params=params, optimizer=optimizer, trained=trained,
                            arrays={"mean": data.mean, "std": data.std, "pca_eigval": data.pca_eigval,
                                    "pca_eigvec": data.pca_eigvec},
                            meta=self._meta())

    def _restore(self, path):
        ckpt = load_model_checkpoint(path, model_name=self.config["model"], training=True)
        ckpt = self.processes.local_checkpoint(ckpt)   # e.g. a tower's rows of the file
        meta = ckpt.meta
        if meta["classes"] != self.data.classes:
            raise TrainingError(f"{path} was trained on classes {meta['classes']}, the data has {self.data.classes}")
        self._check_same_data(path, meta)
        epochs, steps = self.config["epochs"], len(self.train_loader)
        if meta["batch"] > steps or (meta["epoch"], meta["batch"]) > (epochs, 0):
            raise TrainingError(f"{path} stopped at {describe_position(meta)}, outside this "
                                f"run's {plural(epochs, 'epoch')} of "
                                f"{plural(steps, 'batch', 'batches')}")
        if meta["schedule"].get("epochs") != epochs:
            raise TrainingError(f"{path}: its schedule is for {meta['schedule'].get('epochs')} "
                                f"epochs, its config says {epochs}")
        trained = ckpt.trained if self.average is not None else ckpt.params
        for name, value in trained.items():
            if name not in self.model.params or self.model.params[name].shape != value.shape:
                raise TrainingError(f"{path}: parameter {name} does not fit the {self.config['model']} model")
            self.model.params[name][...] = value
        if self.average is not None:
            self.average.load_state_dict(ckpt.params)
        self.sgd.load_state_dict(ckpt.optimizer)
        self.schedule.load_state_dict(meta["schedule"])
        if self.schedule.steps_per_epoch != len(self.train_loader):
            raise TrainingError(f"{path} was trained with {self.schedule.steps_per_epoch} "
                                f"batches per epoch, the data give {len(self.train_loader)}")
        if base_lr(self.config) != base_lr(meta["config"]):
            self._change_lr(meta, base_lr(self.config) / base_lr(meta["config"]))
        r = meta["running"]
        self.progress = Progress(epoch=meta["epoch"], batch=meta["batch"], loss_sum=r["loss_sum"],
                                 correct=r["correct"], seen=r["seen"], seconds=r["seconds"],
                                 metrics=meta["metrics"], best_val_acc=meta["best_val_acc"])

    def _check_same_data(self, path, meta):
        """Refuse to continue a run on other images than it started with."""
        saved = meta.get("data")
        if not isinstance(saved, dict):    # from before fingerprints (checkpoint.py: versions)
            return
        now = {"train": len(self.train_loader.labels),
               "val": len(self.val_loader.labels) if self.val_loader else 0,
               "fingerprint": self.fingerprint}
        if any(saved.get(k) != now[k] for k in now):
            raise TrainingError(
                f"{path} was trained on other images ({saved.get('train')} train / "
                f"{saved.get('val')} val, fingerprint {saved.get('fingerprint')}) than "
                f"{self.data.source} gives ({now['train']} / {now['val']}, {now['fingerprint']}); "
                f"resume with the run's data (--data {meta['config'].get('data')}), or start a new run")

    def _change_lr(self, meta, factor):
        """A resume with another --lr: every rate from here on is `factor` times what it would
        have been (onecycle's peak, step's base rate, plateau's current rate)."""
        state = dict(self.schedule.state_dict())
        for key in ("peak", "lr"):
            if key in state:
                state[key] *= factor
        self.schedule.load_state_dict(state)
        self.config["lr_changes"] = list(meta["config"].get("lr_changes", [])) + [
            {"epoch": meta["epoch"] + 1, "batch": meta["batch"],
             "from": base_lr(meta["config"]), "to": self.config["lr"]}]

    def write_metrics(self):
        if not self.processes.is_root:
            return
        try:
            write_metrics(self.out_dir, self.progress.metrics, classes=self.data.num_classes)
        except OSError as e:
            where = e.filename or os.path.join(self.out_dir, "metrics.csv")
            raise TrainingError(f"cannot write {where}: {e.strerror or e}; the checkpoint of "
                                f"epoch {self.progress.epoch} is saved: fix that, then continue "
                                f"with: python train.py --resume {self.out_dir}") from None

    def _diverged(self, what):
        """The error that stops a diverged run, naming the file that holds the last good state."""
        last = os.path.join(self.out_dir, "last.npz")
        lr, decay = base_lr(self.config), self.config["weight_decay"]
        # lr x decay >= 1: the decay alone flips the weights' sign every step and grows them;
        # blame the decay if it is further from its default than the rate is from its own
        if lr * decay >= 1 and decay / DEFAULT_WEIGHT_DECAY > lr / base_lr({**self.config, "lr": None}):
            return TrainingError(
                f"{what}; stopped. --weight-decay {decay:g} at lr {lr:g} scales the weights by "
                f"1 - lr x decay = {1 - lr * decay:.3g} every step: start again with a "
                f"--weight-decay well below 1/lr = {1 / lr:.3g} (default {DEFAULT_WEIGHT_DECAY:g})")
        try:
            meta = read_meta(last)
            good = (f"{last} holds the last good state ({describe_position(meta)}): continue "
                    f"from it with a lower learning rate, e.g. python train.py --resume "
                    f"{self.out_dir} --lr {lr / 10:.3g}")
        except TinyAlexError:
            source = self.config.get("resumed_from")
            good = (f"nothing was saved; start again with a lower learning rate, e.g. python "
                    f"train.py --resume {source} --out {self.out_dir} --lr {lr / 10:.3g}"
                    if source else
                    f"nothing was saved; start again with a lower --lr than {lr:.3g}")
        return TrainingError(f"{what}; stopped. {good}")

    # --- the loop -----------------------------------------------------------------------
    def train(self, stop_requested=lambda: False, show_progress=True):
        """Train to the configured number of epochs. Returns "done" or "interrupted"."""
        config, progress = self.config, self.progress
        seed, steps = config["seed"], len(self.train_loader)
        save_every = config["save_every"] * 60.0
        if progress.metrics:     # a resumed run: metrics.csv as the checkpoint has it
            self.write_metrics()
        while progress.epoch < config["epochs"]:
            epoch = progress.epoch
            last_save = time.monotonic()
            lr = self.schedule.lr_at(epoch, min(progress.batch, steps - 1))
            bar = tqdm(total=steps, initial=progress.batch, desc=f"epoch {epoch + 1}/{config['epochs']}",
                       unit="batch", dynamic_ncols=True, leave=False, disable=not show_progress,
                       file=sys.stderr)
            # closed here, not by the garbage collector: a second Ctrl-C while the loader's
            # thread stops must reach the caller, not be printed as "Exception ignored"
            with bar, contextlib.closing(self.train_loader.epoch(epoch, progress.batch)) as batches:
                t0 = time.perf_counter()   # a step's time includes waiting for its batch
                for x, y in batches:
                    lr = self.schedule.lr_at(epoch, progress.batch)
                    with np.errstate(over="ignore", invalid="ignore"):   # caught just below
                        step = self.model.loss(x, y, rng=dropout_rng(seed, epoch, progress.batch),
                                               smoothing=config["label_smoothing"], need_logits=True)
                    loss = step.loss
                    if not math.isfinite(loss):
                        raise self._diverged(f"the loss became {loss} at epoch {epoch + 1}, "
                                             f"batch {progress.batch + 1} (lr {lr:.3g})")
                    with np.errstate(over="ignore", invalid="ignore"):   # the next loss tells
                        self.sgd.step(self.model.params, step.grads, lr)
                        if self.average is not None:
                            self.average.step(self.model.params, epoch * steps + progress.batch + 1)
                    dt, t0 = time.perf_counter() - t0, time.perf_counter()
                    progress.batch += 1
                    progress.loss_sum += loss * len(y)
                    progress.correct += int((step.logits.argmax(axis=1) == y).sum())
                    progress.seen += len(y)
                    progress.seconds += dt
                    seen = progress.seen           # the figures first: update(1) shows them
                    bar.set_postfix_str(f"loss {progress.loss_sum / seen:.3f} "
                                        f"acc {100 * progress.correct / seen:.1f}% "
                                        f"{seen / progress.seconds:.0f} img/s lr {lr:.3g}", refresh=False)
                    bar.update(1)
                    if stop_requested():
                        self.save("last.npz")
                        return "interrupted"
                    due = save_every > 0 and time.monotonic() - last_save > save_every and progress.batch < steps
                    due = self.processes.agree(due)   # all processes save together, or none
                    if due:
                        self.save("last.npz")
                        last_save = time.monotonic()
            self._end_epoch(epoch, lr, show_progress)
        return "done"

    @contextlib.contextmanager
    def scored_weights(self):
        """Inside: the model holds the weights the run scores (the average, with --ema)."""
        if self.average is None:
            yield
            return
        trained = {name: w.copy() for name, w in self.model.params.items()}
        for name, w in self.model.params.items():
            w[...] = self.average.average[name]
        try:
            yield
        finally:
            for name, w in self.model.params.items():
                w[...] = trained[name]

    def _end_epoch(self, epoch, lr, show_progress=False):
        progress = self.progress
        t0 = time.perf_counter()
        val_loss = val_acc = val_acc_flip = None
        desc = "validating" if show_progress else None
        with self.scored_weights():
            if self.val_loader and self.config["val_flip"]:      # the mirror too: twice the work
                views = score_loader_views(self.model, self.val_loader, desc=desc)
                (val_loss, val_acc, _), val_acc_flip = views["none"], views["flip"][1]
            elif self.val_loader:
                val_loss, val_acc, _ = score_loader(self.model, self.val_loader, desc=desc)
        row = {"epoch": epoch + 1, "train_loss": progress.loss_sum / max(1, progress.seen),
               "train_acc": progress.correct / max(1, progress.seen), "val_loss": val_loss, "val_acc": val_acc,
               "lr": lr, "seconds": round(progress.seconds + time.perf_counter() - t0, 3),
               "img_per_s": round(progress.seen / max(progress.seconds, 1e-9), 1), "val_acc_flip": val_acc_flip}
        if val_loss is not None and not math.isfinite(val_loss):
            raise self._diverged(f"the validation loss became {val_loss} at the end of epoch "
                                 f"{epoch + 1} (lr {lr:.3g})")
        progress.metrics.append(row)
        if val_acc is not None:
            self.schedule.end_epoch(epoch, val_acc)
        improved = val_acc is not None and val_acc > progress.best_val_acc
        if improved:
            progress.best_val_acc = val_acc
        progress.epoch, progress.batch = epoch + 1, 0
        progress.loss_sum, progress.correct, progress.seen, progress.seconds = 0.0, 0, 0, 0.0
        if improved or self.val_loader is None:   # best first: a failed save is redone on resume
            self.save("best.npz")
        self.save("last.npz")
        self.write_metrics()
        self.log(epoch_line(row, self.config["epochs"]))

    def final_scores(self, show_progress=False):
        """Loss, top-1 and top-5 of the final parameters on the validation and test splits
        (those the data has, within --limit-val and --limit-test), each scored twice: on the
        centre image and with flip test-time augmentation.
        {"val_top1": ..., "val_top1_flip": ..., "test_top1": ..., ...}. A run that averages
        its weights (--ema) scores the average, and the weights as trained too, under the
        same names ending in "_trained"."""
        scores = {}
        weights = [("", self.scored_weights)]
        if self.average is not None:
            weights.append(("_trained", contextlib.nullcontext))
        for split, loader in (("val", self.val_loader), ("test", self.test_loader)):
            if loader is None:
                continue
            name = "validation" if split == "val" else split
            for tag, holding in weights:
                with holding():
                    views = score_loader_views(self.model, loader,
                                               desc=f"scoring {name}" if show_progress else None)
                for tta, suffix in (("none", ""), ("flip", "_flip")):
                    loss, top1, top5 = views[tta]
                    scores.update({f"{split}_loss{suffix}{tag}": loss, f"{split}_top1{suffix}{tag}": top1,
                                   f"{split}_top5{suffix}{tag}": top5})
        return scores


def write_config(out_dir, config):
    text = json.dumps({**config, "tinyalex_version": __version__}, indent=2) + "\n"
    path = os.path.join(out_dir, "config.json")
    with writing(path):                         # a full disk: one line
        atomic_write(path, lambda f: f.write(text.encode()))
