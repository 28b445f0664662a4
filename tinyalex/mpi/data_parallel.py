"""Data parallelism: every process holds the whole model and takes a shard of every batch.

    mpiexec -n N python train.py ...                       on one machine
    mpiexec -n N -f hosts python train.py ...              on several (MPICH's host file)

One step on N ranks, batch B (the "global batch": --batch-size keeps its meaning):

    every rank      reads the same batch of B images (same seed, same order, same augmentation)
    rank r          takes rows lo_r:hi_r (B split as evenly as can be: B*r//N ... B*(r+1)//N),
                    runs forward and backward on them: its shard's mean loss and gradients
    Allreduce       g = sum_r (n_r / B) * g_r            (n_r = hi_r - lo_r images on rank r)
    every rank      applies the same SGD update to the same weights: they stay equal

Why weight by n_r / B: each rank's gradient is the mean over its n_r images, g_r = (1/n_r)
sum_{i in r} dL_i/dw; the global batch's is (1/B) sum_i dL_i/dw = sum_r (n_r/B) g_r. Averaging
the g_r is the same only when all shards are equal; the last, partial batch of an epoch (or a
batch size N does not divide) has unequal shards. A rank whose shard is empty (fewer images
than ranks) contributes zeros.

Dropout. In the single process the masks of a batch come from one generator, drawn for the
whole batch, (B, 2304) then (B, 4096). Here each rank draws those same whole-batch masks from the
same generator and keeps its rows (`BatchRowsGenerator`): a few milliseconds per step, and N
ranks then compute what one process computes: same masks, same gradients up to the
order of floating-point sums. The weights of N ranks and of one process are equal up to that
rounding (tests/test_mpi.py: float64, 1e-10 after two steps; in float32 training amplifies it,
docs/parallel.md), so a run can even be resumed on another number of ranks. (Independent
masks per rank would be as good for training, but not comparable.)

Evaluation shards too: each rank runs its rows forward and the logits are gathered
(Allgatherv), so every rank computes the same accuracy.

Only rank 0 writes files; every rank holds the same weights, so it needs nothing from the
others to write a checkpoint. Across machines every machine must see the data at the same path;
the run directory is written on rank 0's machine (to resume there, or on a shared disk).
"""

import numpy as np

from ..model import LossResult
from .ranks import Ranks, timed


def shard(n, rank, size):
    """Rows lo:hi of a batch of n that `rank` of `size` takes (np.array_split's split)."""
    return n * rank // size, n * (rank + 1) // size


def shard_weight(n_shard, n_batch, size):
    """The weight of a shard's mean gradient in the batch's: its share of the images (not
    1/size, which is right only when every shard has as many images)."""
    return n_shard / n_batch


class BatchRowsGenerator(np.random.Generator):
    """A generator that draws what the whole batch would, and returns this shard's rows.

    `random((n_r, D))` draws `random((B, D))` from the shared stream, exactly as the single
    process does for the whole batch, and returns rows lo:hi. Dropout is the only user
    (layers/dropout.py: `rng.random(x.shape, dtype=np.float32)`)."""

    def __init__(self, rng, batch, lo, hi):
        super().__init__(rng.bit_generator)     # the same stream: draws advance the caller's
        self.batch, self.lo, self.hi = batch, lo, hi

    def random(self, size=None, dtype=np.float64, out=None):
        size = (size,) if np.isscalar(size) else tuple(size)
        if out is not None or not size or size[0] != self.hi - self.lo:
            raise ValueError(f"BatchRowsGenerator draws (shard rows, ...) arrays, got {size}")
        whole = super().random((self.batch,) + size[1:], dtype=dtype)
        return whole[self.lo:self.hi]


class DataParallelAlexNet:
    """An AlexNet whose loss and forward run on this rank's shard of the batch and return the
    whole batch's answer: the trainer's loop sees one model (like PyTorch's
    DistributedDataParallel, without its overlap of communication and backward)."""

    def __init__(self, model, ranks):
        self.model, self.ranks = model, ranks
        self.comm = ranks.comm
        self.params = model.params                       # the same arrays: SGD updates them
        self.arch, self.name, self.input_shape = model.arch, model.name, model.input_shape
        self.num_classes, self.dtype, self.route = model.num_classes, model.dtype, model.route

    def _gather_logits(self, logits, n, name):
        """Every rank's logits, in rank order: (n_r, M) here -> (n, M) on every rank."""
        M = self.num_classes
        counts = [M * (hi - lo) for lo, hi in (shard(n, r, self.ranks.size) for r in range(self.ranks.size))]
        whole = np.empty((n, M), logits.dtype)
        mine = np.ascontiguousarray(logits)
        timed(self.ranks.traffic, name, mine.nbytes,
              lambda: self.comm.Allgatherv(mine, [whole, counts]))
        return whole

    def loss(self, x, y, *, rng=None, train=True, smoothing=0.0, need_logits=False):
        """As AlexNet.loss on the whole batch (x, y): a LossResult (no dx), the same on every
        rank; this rank computes its shard only (need_logits: every rank's, gathered)."""
        B = len(y)
        lo, hi = shard(B, self.ranks.rank, self.ranks.size)
        n = hi - lo
        if n:
            rows = BatchRowsGenerator(rng, B, lo, hi) if rng is not None else None
            mine = self.model.loss(x[lo:hi], y[lo:hi], rng=rows, train=train, smoothing=smoothing,
                                   need_logits=need_logits)
            loss, grads, logits = mine.loss, mine.grads, mine.logits
        else:                                            # more ranks than images
            loss, logits = 0.0, np.empty((0, self.num_classes), self.dtype)
            grads = {k: np.zeros_like(w) for k, w in self.params.items()}
        # sum over ranks of (n_r / B) * g_r: the whole batch's mean gradient
        from mpi4py import MPI
        weight = self.dtype.type(shard_weight(n, B, self.ranks.size))
        for k in self.params:                            # the same order on every rank
            g = grads[k] = np.ascontiguousarray(grads[k])
            g *= weight
            timed(self.ranks.traffic, "allreduce gradients", g.nbytes,
                  lambda: self.comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM))
        loss = self.comm.allreduce(loss * n, op=MPI.SUM) / B
        if train:
            self.ranks.traffic.steps += 1
        if need_logits:
            logits = self._gather_logits(logits, B, "gather logits")
        return LossResult(loss, grads, logits if need_logits else None)

    def forward(self, x):
        """Evaluation: the logits of the whole batch, on every rank (this rank runs its rows)."""
        N = len(x)
        lo, hi = shard(N, self.ranks.rank, self.ranks.size)
        logits = (self.model.forward(x[lo:hi]) if hi > lo
                  else np.empty((0, self.num_classes), self.dtype))
        return self._gather_logits(logits, N, "eval gather logits")


class DataParallel(Ranks):
    """The `parallel` hook of trainer.Run for data parallelism (see ranks.py)."""

    def wrap(self, model):
        return DataParallelAlexNet(model, self)

    def full_state(self, params, optimizer):
        """Every rank holds the whole state already; rank 0 returns it, the others None."""
        return (params, optimizer) if self.is_root else (None, None)

    def local_checkpoint(self, ckpt):
        return ckpt
