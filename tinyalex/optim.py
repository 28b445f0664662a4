"""Stochastic gradient descent with momentum and weight decay, and the learning-rate schedules.

Everything here is written by hand; no framework optimizer is used.

The update rule (AlexNet paper, section 5)
-------------------------------------------
For every parameter array ``w`` (weights and biases alike) with gradient ``g = dL/dw``:

    v <- momentum * v - weight_decay * lr * w - lr * g
    w <- w + v

with momentum 0.9 and weight decay 5e-4 by default. ``v`` (the velocity) starts at zero.

Two common variations, each an option:

- Nesterov momentum (Sutskever et al., 2013): the step looks ahead along the velocity,

      v <- momentum * v - weight_decay * lr * w - lr * g
      w <- w + momentum * v - weight_decay * lr * w - lr * g

  i.e. the new velocity's momentum part plus this step's own gradient step, which is PyTorch's
  ``SGD(nesterov=True)`` in the same way as below.
- No weight decay on some parameters (``no_decay``, e.g. the biases): their
  ``weight_decay`` is 0. A bias only shifts a unit's output; shrinking it towards zero does not
  limit what the model can fit, it only slows the biases down.

How PyTorch's ``torch.optim.SGD`` differs
------------------------------------------
PyTorch keeps a momentum buffer ``b`` of *gradients*, not of steps, and multiplies by the
learning rate last:

    b <- momentum * b + (g + weight_decay * w)
    w <- w - lr * b

Writing PyTorch's step as ``u = -lr * b`` gives ``u_t = momentum * (lr_t / lr_{t-1}) * u_{t-1}
- lr_t * (g + weight_decay * w)``. So the two rules are the same, step for step, whenever the
learning rate does not change between steps (then ``v = -lr * b``). When the learning rate
changes, PyTorch rescales the momentum already accumulated by the new rate at once, while the
paper's velocity keeps the steps taken at the old rate and only new gradients feel the new
rate. With a per-iteration schedule (one-cycle) the rate changes a little every step and the
difference is small; after a tenfold drop (step, plateau) the paper's rule lets the old
momentum decay over about 1 / (1 - momentum) = 10 steps.

Schedules
---------
``make_schedule(name, ...)`` returns one of three schedules, all asked for the rate of an
iteration with ``lr_at(epoch, step)`` (both 0-based, ``step`` counted within the epoch) and
told about the end of each epoch with ``end_epoch(epoch, val_acc)``:

- ``onecycle`` (default): PyTorch's OneCycleLR with ``anneal_strategy='linear'``,
  ``pct_start=0.15``, ``div_factor=25``, ``final_div_factor=1e4``, ``three_phase=False``,
  updated every iteration. Peak 0.05 for the ``cifar`` model, 0.02 for ``paper``.
- ``step``: PyTorch's MultiStepLR with milestones [5, 8] and gamma 0.1, lr 0.01.
- ``plateau``: the paper's rule, lr 0.01 divided by 10 when validation accuracy has not
  improved for ``patience`` epochs.
"""

from __future__ import annotations

import math

import numpy as np

from tinyalex.errors import CheckpointError, TinyAlexError
from tinyalex.model import ROUTES
from tinyalex.words import plural


def sgd_update(w, g, v, lr, *, momentum, weight_decay, nesterov):
    """The update rule on one parameter, in place: w and v change, g is read. The readable
    route's (the fast route runs layers.fast.sgd_update: the same operations, one pass).
    The scalars are taken in the parameter's dtype, as NumPy takes them."""
    t = w.dtype.type
    g = np.asarray(g, dtype=w.dtype)
    if nesterov:
        step = -t(weight_decay * lr) * w - t(lr) * g       # -weight_decay * lr * w - lr * g
        v *= t(momentum)
        v += step                                          # v <- momentum * v + step
        w += t(momentum) * v + step                        # w <- w + momentum * v + step
    else:
        v *= t(momentum)                                   # v <- momentum * v
        v -= t(weight_decay * lr) * w                      #      - weight_decay * lr * w
        v -= t(lr) * g                                     #      - lr * g
        w += v                                             # w <- w + v


def average_update(a, w, decay):
    """a <- decay * a + (1 - decay) * w, in place: one step of the moving average `a` of a
    parameter `w` (class Average). The readable route's; the fast route runs
    layers.fast.average_update, the same operations in one pass."""
    t = w.dtype.type
    a *= t(decay)
    a += t(1 - decay) * w


def route_update(route, what="sgd"):
    """The update function of a route, what="sgd" or "average": sgd_update or average_update
    above (readable, and a student's own layers) or its Numba twin in layers/fast/sgd.py
    (fast), imported only then (it loads Numba)."""
    from .student import is_student_route
    if route not in ROUTES and not is_student_route(route):
        raise ValueError(f"unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if route != "fast":
        return sgd_update if what == "sgd" else average_update
    from layers.fast import sgd as fast
    return fast.sgd_update if what == "sgd" else fast.average_update


class SGD:
    """SGD with momentum and weight decay, the paper's update rule (see the module docstring).

    Inputs:
    - params: dict name -> parameter array (e.g. ``model.params``); one velocity array of the
      same shape and dtype is allocated per parameter, filled with zeros.
    - momentum: the velocity's decay per step (paper: 0.9).
    - weight_decay: the L2 coefficient, applied to every parameter (biases included, as
      PyTorch's ``weight_decay`` does; paper: 5e-4) except those named in ``no_decay``.
    - nesterov: Nesterov momentum (module docstring); the paper's rule when False.
    - no_decay: names of parameters that get no weight decay (e.g. the biases).
    - route: the route whose update runs, "fast" (a Numba kernel) or "readable" (sgd_update).
    """

    def __init__(self, params: dict[str, np.ndarray], *, momentum: float = 0.9,
                 weight_decay: float = 5e-4, nesterov: bool = False, no_decay=(),
                 route: str = "fast"):
        if not (0.0 <= momentum < 1.0):
            raise TinyAlexError(f"momentum must be in [0, 1), got {momentum}")
        if not (weight_decay >= 0.0 and math.isfinite(weight_decay)):
            raise TinyAlexError(f"weight decay must be >= 0, got {weight_decay}")
        unknown = sorted(set(no_decay) - set(params))
        if unknown:
            raise TinyAlexError(f"no_decay names unknown parameters: {', '.join(unknown)}")
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)
        self.no_decay = frozenset(no_decay)
        self.update = route_update(route)
        self.velocity = {name: np.zeros_like(w) for name, w in params.items()}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             lr: float) -> None:
        """Update every parameter in place with its gradient at learning rate ``lr``.

        ``params`` and ``grads`` are keyed like the dict given to the constructor.
        """
        if set(grads) != set(self.velocity) or set(params) != set(self.velocity):
            missing = set(self.velocity) - set(grads)
            extra = set(grads) - set(self.velocity)
            raise ValueError(f"SGD.step: parameter names differ from the optimizer's "
                             f"(missing gradients {sorted(missing)}, unknown {sorted(extra)}, "
                             f"or params keys changed)")
        if not (math.isfinite(lr) and lr >= 0.0):
            raise ValueError(f"SGD.step: learning rate must be finite and >= 0, got {lr}")
        for name, v in self.velocity.items():
            w, g = params[name], grads[name]
            if w.shape != v.shape or g.shape != v.shape:
                raise ValueError(f"SGD.step: {name} has shape {w.shape}, gradient "
                                 f"{g.shape}, velocity {v.shape}")
            if not (w.flags.c_contiguous and v.flags.c_contiguous):
                raise ValueError(f"SGD.step: {name} and its velocity must be C-contiguous arrays")
            decay = 0.0 if name in self.no_decay else self.weight_decay
            self.update(w, g, v, lr, momentum=self.momentum, weight_decay=decay, nesterov=self.nesterov)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The velocities by parameter name. These are the live arrays, not copies: save them
        (e.g. with ``save_checkpoint``) before the next ``step``."""
        return dict(self.velocity)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy saved velocities into this optimizer's arrays.

        Raises CheckpointError if the names or shapes differ from the parameters'.
        """
        if set(state) != set(self.velocity):
            missing = sorted(set(self.velocity) - set(state))
            extra = sorted(set(state) - set(self.velocity))
            raise CheckpointError(f"optimizer state does not match the model: "
                                  f"missing {missing}, unexpected {extra}")
        for name, v in self.velocity.items():
            saved = np.asarray(state[name])
            if saved.shape != v.shape:
                raise CheckpointError(f"optimizer state for {name} has shape {saved.shape}, "
                                      f"the parameter has {v.shape}")
            np.copyto(v, saved, casting="same_kind")


def average_decay(decay: float, t: int) -> float:
    """d_t of class Average: the weight of the old average after step t (1, 2, ...); also
    torch-train's, so that its average is this one."""
    return min(decay, (1 + t) / (10 + t))


class Average:
    """An exponential moving average of the parameters (Polyak averaging), the weights a run
    that averages (--ema DECAY) scores and keeps in its checkpoints. After step t (1, 2, ...):

        a <- d_t a + (1 - d_t) w,     d_t = min(DECAY, (1 + t) / (10 + t))

    The average starts at the initial weights; the ramp d_t lets it forget them in the first
    steps (d_1 = 0.18: mostly the new weights), after which it weighs the last 1 / (1 - DECAY)
    steps most (DECAY = 0.999: about 1,000 steps, three epochs of `cifar` at batch 128).

    Inputs: params (dict name -> array, copied as the start of the average), decay in (0, 1),
    route: whose update runs (as SGD's)."""

    def __init__(self, params: dict[str, np.ndarray], decay: float, route: str = "fast"):
        if not 0.0 < decay < 1.0:
            raise TinyAlexError(f"the average's decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.update = route_update(route, "average")
        self.average = {name: w.copy() for name, w in params.items()}

    def step(self, params: dict[str, np.ndarray], t: int) -> None:
        """Fold in the parameters after step t (counted from 1 over the whole run)."""
        d = average_decay(self.decay, t)
        for name, a in self.average.items():
            self.update(a, params[name], d)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The averaged parameters by name (the live arrays)."""
        return dict(self.average)

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name, a in self.average.items():
            np.copyto(a, state[name], casting="same_kind")


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules


# One-cycle peak learning rates per model (docs/training.md); "tiny", the test model, takes
# cifar's.
ONECYCLE_PEAK = {"cifar": 0.05, "paper": 0.02, "tiny": 0.05}
# The starting rate of the step and plateau schedules (the paper's 0.01).
DEFAULT_LR = 0.01
# The one-cycle warm-up: this fraction of the run (--warmup), but never fewer steps than
# MIN_WARMUP_STEPS (at most half the run)
DEFAULT_WARMUP = 0.15
MIN_WARMUP_STEPS = 100
# the default --weight-decay (the paper's)
DEFAULT_WEIGHT_DECAY = 5e-4


def _float_or_none(value):
    return None if value is None else float(value)


class Schedule:
    """What the three schedules share: the run's length (epochs of steps_per_epoch steps) and
    a state, `FIELDS` (name -> type): the settings and counters, saved and restored whole."""

    name = ""
    FIELDS = {"epochs": int, "steps_per_epoch": int}

    def __init__(self, *, epochs: int, steps_per_epoch: int):
        self.epochs = int(epochs)
        self.steps_per_epoch = int(steps_per_epoch)

    def end_epoch(self, epoch: int, val_acc: float | None) -> None:
        """Nothing to do: the rate depends on the iteration only."""

    def state_dict(self) -> dict:
        return {"name": self.name, **{key: getattr(self, key) for key in self.FIELDS}}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("name") != self.name:
            got = state.get("name") if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"the checkpoint's schedule is {got!r}, not {self.name!r}")
        try:
            values = {key: kind(state[key]) for key, kind in self.FIELDS.items()}
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"bad {self.name} schedule state: {e!r}") from None
        vars(self).update(values)

    def _iteration(self, epoch: int, step: int) -> int:
        """The 0-based global iteration number; ValueError outside the run."""
        if not (0 <= epoch < self.epochs and 0 <= step < self.steps_per_epoch):
            raise ValueError(f"lr_at(epoch={epoch}, step={step}) is outside the schedule's "
                             f"{plural(self.epochs, 'epoch')} of {plural(self.steps_per_epoch, 'step')}")
        return epoch * self.steps_per_epoch + step


class OneCycle(Schedule):
    """Linear one-cycle schedule, updated every iteration.

    With ``T = epochs * steps_per_epoch`` iterations, iteration ``i = epoch *
    steps_per_epoch + step``, ``start = peak / 25`` and ``final = start / 1e4``:

        warm-up       W = max(p * T, min(MIN_WARMUP_STEPS, T / 2)) iterations
                      (p * T for T < 4), p = pct_start (--warmup, DEFAULT_WARMUP)
        warm-up end   e = W - 1                  (a float, as in PyTorch)
        i <= e:       lr = start + (peak - start) * i / e
        i >  e:       lr = peak + (final - peak) * (i - e) / (T - 1 - e)

    so the rate climbs from ``start`` at i = 0 to ``peak`` at i = e and falls to ``final``
    at the last iteration i = T - 1. The warm-up is 15% of the run, but never shorter than
    MIN_WARMUP_STEPS (or half a short run): a run of a few dozen steps would otherwise reach
    the peak within a handful of steps, from weights still at their random start, and
    diverge. These are exactly the boundaries of PyTorch's ``OneCycleLR(max_lr=peak,
    total_steps=T, pct_start=W / T, anneal_strategy='linear', div_factor=25,
    final_div_factor=1e4, three_phase=False)``, where the k-th call of
    ``scheduler.step()`` sets the rate of iteration k. (When ``e < 0``, a run of fewer than 7
    iterations under the 15% rule, there is no warm-up, as in PyTorch.)
    """

    name = "onecycle"
    FIELDS = {"peak": float, "warmup": float, **Schedule.FIELDS}
    div_factor = 25.0
    final_div_factor = 1e4

    def __init__(self, *, peak: float, epochs: int, steps_per_epoch: int,
                 pct_start: float = DEFAULT_WARMUP):
        super().__init__(epochs=epochs, steps_per_epoch=steps_per_epoch)
        self.peak = float(peak)
        if not 0.0 <= pct_start < 1.0:
            raise TinyAlexError(f"the warm-up must be a fraction of the run in [0, 1), got {pct_start}")
        shortest = min(MIN_WARMUP_STEPS, self.total / 2) if self.total >= 4 else 0
        self.warmup = max(pct_start * self.total, shortest)

    @property
    def total(self) -> int:
        return self.epochs * self.steps_per_epoch

    def load_state_dict(self, state: dict) -> None:
        if isinstance(state, dict) and "warmup" not in state:
            # saved before the warm-up had a minimum length: 15% of the run, as then
            try:
                state = {**state, "warmup": 0.15 * int(state["epochs"]) * int(state["steps_per_epoch"])}
            except (KeyError, TypeError, ValueError):
                pass                      # refused below, as any damaged state
        super().load_state_dict(state)

    def lr_at(self, epoch: int, step: int) -> float:
        i = self._iteration(epoch, step)
        start = self.peak / self.div_factor
        final = start / self.final_div_factor
        warmup_end = self.warmup - 1
        if i <= warmup_end:
            return start + (self.peak - start) * (i / warmup_end)
        last = self.total - 1
        return self.peak + (final - self.peak) * ((i - warmup_end) / (last - warmup_end))


class MultiStep(Schedule):
    """A step schedule: ``lr`` for epochs 0-4, ``lr/10`` for 5-7, ``lr/100`` from 8 on.

    PyTorch's ``MultiStepLR(milestones=[5, 8], gamma=0.1)`` stepped once per epoch; the rate
    is constant within an epoch.
    """

    name = "step"
    FIELDS = {"lr": float, **Schedule.FIELDS}
    milestones = (5, 8)
    gamma = 0.1

    def __init__(self, *, lr: float, epochs: int, steps_per_epoch: int):
        super().__init__(epochs=epochs, steps_per_epoch=steps_per_epoch)
        self.lr = float(lr)

    def lr_at(self, epoch: int, step: int) -> float:
        self._iteration(epoch, step)
        drops = sum(epoch >= m for m in self.milestones)
        return self.lr * self.gamma ** drops


class Plateau(Schedule):
    """The paper's schedule: divide the rate by 10 when validation accuracy stops improving.

    "Improved" means strictly greater than the best validation accuracy of any earlier
    epoch (no threshold; the first epoch always improves). After each epoch,
    ``end_epoch(epoch, val_acc)`` counts the epochs in a row without improvement; when the
    count reaches ``patience``, the rate is divided by 10 (from the next epoch on) and the
    count restarts at 0, so a further ``patience`` epochs without beating the best divide
    it again. The best accuracy is never reset.

    With patience p this is PyTorch's ``ReduceLROnPlateau(mode='max', factor=0.1,
    patience=p - 1, threshold=0, threshold_mode='abs')``: PyTorch reduces when the count
    *exceeds* its patience. The rate, the best accuracy and the count are all in
    ``state_dict()``, so a resumed run continues exactly.
    """

    name = "plateau"
    FIELDS = {"lr": float, **Schedule.FIELDS, "patience": int, "best": _float_or_none,
              "bad_epochs": int, "last_epoch": int}
    factor = 0.1

    def __init__(self, *, lr: float, epochs: int, steps_per_epoch: int, patience: int):
        super().__init__(epochs=epochs, steps_per_epoch=steps_per_epoch)
        self.lr = float(lr)
        self.patience = int(patience)
        self.best: float | None = None      # best validation accuracy so far
        self.bad_epochs = 0                 # epochs in a row without improvement
        self.last_epoch = -1                # the last epoch end_epoch was told about

    def lr_at(self, epoch: int, step: int) -> float:
        self._iteration(epoch, step)
        return self.lr

    def end_epoch(self, epoch: int, val_acc: float | None) -> None:
        if val_acc is None or not math.isfinite(val_acc):
            raise ValueError("the plateau schedule needs a validation accuracy every epoch "
                             f"(got {val_acc!r}); use a validation split or another schedule")
        if epoch <= self.last_epoch:
            raise ValueError(f"end_epoch({epoch}) called after epoch {self.last_epoch} "
                             "already ended")
        self.last_epoch = epoch
        if self.best is None or val_acc > self.best:
            self.best = float(val_acc)
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.lr *= self.factor
            self.bad_epochs = 0


SCHEDULES = {schedule.name: schedule for schedule in (OneCycle, MultiStep, Plateau)}


def make_schedule(name: str = "onecycle", *, lr: float | None = None, epochs: int,
                  steps_per_epoch: int, patience: int = 2, model: str = "cifar",
                  warmup: float = DEFAULT_WARMUP):
    """Build a learning-rate schedule.

    Inputs:
    - name: "onecycle", "step" or "plateau" (see the module docstring).
    - lr: onecycle's peak rate (default ONECYCLE_PEAK[model]: 0.05 cifar, 0.02 paper), or
      the starting rate of step and plateau (default 0.01).
    - epochs, steps_per_epoch: the length of the run; iterations are numbered
      ``epoch * steps_per_epoch + step``.
    - patience: plateau only, epochs without improvement before the rate drops.
    - model: "cifar", "paper" or "tiny"; chooses onecycle's default peak.
    - warmup: onecycle only, its warm-up as a fraction of the run (OneCycle's pct_start).

    Returns an object with ``.name``, ``.lr_at(epoch, step) -> float``,
    ``.end_epoch(epoch, val_acc)``, ``.state_dict() -> dict`` (JSON-serialisable) and
    ``.load_state_dict(d)``, which restores the whole schedule, its settings included.

    Raises TinyAlexError for an unknown name or model, a learning rate that is not a
    positive number, or fewer than one epoch, step or patience.
    """
    if name not in SCHEDULES:
        raise TinyAlexError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    if model not in ONECYCLE_PEAK:
        raise TinyAlexError(f"unknown model {model!r}; choose one of {', '.join(ONECYCLE_PEAK)}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise TinyAlexError(f"learning rate must be a positive number, got {lr}")
    for what, value in (("epochs", epochs), ("steps per epoch", steps_per_epoch),
                        ("patience", patience)):
        if int(value) != value or value < 1:
            raise TinyAlexError(f"{what} must be a whole number >= 1, got {value}")
    length = dict(epochs=epochs, steps_per_epoch=steps_per_epoch)
    if name == "onecycle":
        return OneCycle(peak=ONECYCLE_PEAK[model] if lr is None else lr, pct_start=warmup, **length)
    if name == "step":
        return MultiStep(lr=DEFAULT_LR if lr is None else lr, **length)
    return Plateau(lr=DEFAULT_LR if lr is None else lr, patience=patience, **length)
