r"""The paper's two GPUs as two MPI processes: AlexNet cut into two towers (section 3.2).

    mpiexec -n 2 python train.py --towers 2

The network did not fit on one GTX 580, so each GPU held half of every layer's kernels, and
"the GPUs communicate only in certain layers": conv3 and the fully connected layers see both
GPUs' outputs, every other layer only its own GPU's (Figure 2). Here rank 0 holds tower A and
rank 1 tower B, and the towers exchange activations forward (and the matching gradients
backward) only at those crossings. The numbers are the `cifar` model's, batch N:

      rank 0: tower A                                  rank 1: tower B
      the image (N,3,32,32): both ranks read the same batch
      conv1  filters 0-47   ReLU                       conv1  filters 48-95  ReLU
      lrn1   <===== halo: 2 maps each way (N,2,32,32), see "LRN" below =====>
      pool1                                            pool1
      conv2  filters 0-127 on maps 0-47 (groups=2)     conv2  128-255 on maps 48-95
      lrn2   <===== halo: 2 maps each way (N,2,15,15) =====>
      pool2  (N,128,7,7)                               pool2  (N,128,7,7)
             \____________ into_conv3: (N,128,7,7) each way ____________/
      conv3  filters 0-191 on all 256 maps             conv3  192-383 on all 256 maps
      conv4  0-191 on maps 0-191 (groups=2)            conv4  192-383 on maps 192-383
      conv5  0-127, pool5 -> (N,128,3,3) -> (N,1152)   conv5  128-255 -> (N,1152)
             \____________ into_fc6: (N,1152) each way ____________/
      drop6 on all 2304 features, fc6 units 0-2047     drop6, fc6 units 2048-4095
             \____________ into_fc7: (N,2048) each way ____________/
      drop7 on all 4096, fc7 units 0-2047              drop7, fc7 units 2048-4095
             \____________ into_fc8: (N,2048) each way ____________/
      fc8    classes 0-4                               fc8    classes 5-9
             \____________ gather_logits: (N,5) each way ____________/
      softmax cross-entropy on all 10 logits: the same loss on both ranks

Going back, each crossing runs the other way: a tower's conv3 (or fc6, fc7, fc8) computed a
gradient for *both* towers' inputs; it keeps its own half and sends the other half home,
where it is added (`join_backward`). The logits' gradient needs nothing: both ranks computed
the same loss from the same logits, and each keeps its own classes' columns.

One function per crossing: `into_conv3`, `into_fc6`, `into_fc7`, `into_fc8` (forward; their
backward is `join_backward`), `lrn_halo_forward` / `lrn_halo_backward`, `gather_logits_forward`
/ `gather_logits_backward`. `tower_plan(arch)` places them in the layer plan, and checks that
the crossings it derives (before a groups=1 convolution or a dense layer whose input is split)
are exactly the paper's four.

Same maths as one process. tinyalex's single-process model is the reference: a tower run
starts from the same full initial weights (each rank draws them all and keeps its rows), and
its parameters are exactly rows of the single-process ones, every parameter cut along its
first axis (filters, units, classes): tower A the first half, tower B the second. A checkpoint
is therefore the ordinary single-process `.npz` (rank 0 gathers B's rows to write it), and a
single-process checkpoint is resumed on towers by cutting it. tests/test_mpi.py trains a few
steps both ways in float64 and compares the weights to 1e-10.

Three details make it the same arithmetic (only the order of floating-point sums differs:
equal to 2e-16 in float64; float32 runs drift apart as rounding grows, docs/parallel.md):

  LRN. tinyalex's LRN runs over all 96 (or 256) channels, and its window of 5 crosses the
  towers' boundary: channel 47 sums the squares of channels 45-49, two of which are tower B's.
  The paper normalised within each GPU's maps instead (cuda-convnet's LRN saw one GPU's
  channels). To match the single-process model each tower borrows the 2 boundary maps of its
  neighbour (a "halo"), normalises its maps with the window clipped only at the real edges,
  and sends back, on the way back, the gradient its outputs put on the borrowed maps:

        tower A: maps 0 ... 45 46 47 | 48 49 (borrowed from B)
        tower B:    (borrowed from A) 46 47 | 48 49 50 ... 95

  These two exchanges are not in Figure 2: they are the price of tinyalex's LRN spanning the
  split. (Per-tower LRN would drop them, and would train a different, equally good network.)

  Dropout. Both ranks draw the masks from the same generator, in the same order and of the same
  shape as the single process does (the joined features (N, 2304), then (N, 4096)), so the
  masks are the single process's. The crossings into fc6 and fc7 therefore come before the
  dropout: each tower applies the whole mask to the joined features, then its half of fc6.

  fc8. Its 10 outputs are split like every other layer's (5 classes each, fc8 sees both towers'
  fc7 units), and the logits are gathered for the loss. Cutting fc8 by its inputs instead
  (each tower multiplies its own 2048 fc7 units, the partial logits summed by an Allreduce)
  would save the into_fc8 exchange (2 x N x 2048 floats per step, about 2 MB at N = 128) for
  a layout that no other layer has; the paper's way is kept.

Dimensions: N batch; C channels of one tower (half the model's); H, W the maps' size.
"""

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from ..errors import TinyAlexError
from ..model import ROUTES, AlexNet, layer_plan, param_shapes
from .ranks import Ranks, timed

TOWERS = 2
FIGURE_2 = ("into_conv3", "into_fc6", "into_fc7", "into_fc8")   # where the paper's GPUs talk


def own_rows(n, tower):
    """The rows of a parameter (filters, units or classes) that `tower` holds: the first half
    (rounded up) for tower A (0), the rest for tower B (1)."""
    half = (n + 1) // 2
    return slice(0, half) if tower == 0 else slice(half, n)


# --- the wire -----------------------------------------------------------------------------

class Link:
    """The wire between the two towers: an MPI communicator of two ranks, 0 (tower A) and
    1 (tower B). Every exchange is one `swap`: send an array, receive the other tower's."""

    def __init__(self, comm, traffic):
        if comm.Get_size() != TOWERS:
            raise TinyAlexError(f"--towers 2 takes exactly 2 processes, not {comm.Get_size()}: "
                                "mpiexec -n 2 python train.py --towers 2")
        self.comm = comm
        self.tower = comm.Get_rank()
        self.other = 1 - self.tower
        self.traffic = traffic
        self.phase = ""        # "eval " while evaluating, so training figures stay apart

    def swap(self, name, send, recv_shape=None):
        """Send `send` to the other tower and return what it sends here (MPI Sendrecv; both
        towers call it at the same crossing). recv_shape: the other's array, if not send's."""
        send = np.ascontiguousarray(send)
        recv = np.empty(send.shape if recv_shape is None else recv_shape, send.dtype)
        timed(self.traffic, self.phase + name, send.nbytes,
              lambda: self.comm.Sendrecv(send, dest=self.other, recvbuf=recv, source=self.other))
        return recv


# --- the crossings of Figure 2: join the two towers' halves -------------------------------

class JoinCache(NamedTuple):
    name: str
    own: slice        # this tower's channels (or units) in the joined array
    other: slice      # the other tower's


def join_forward(h, link, name):
    """Both towers' halves side by side, on both ranks: (N, C, ...) here and (N, C', ...)
    there -> (N, C + C', ...), tower A's first, which is the single-process layout (its
    channels, and the features its flatten makes of them, come first).
    Returns: joined, cache (JoinCache)."""
    C = h.shape[1]
    theirs = link.swap(link.phase + name, h)
    if link.tower == 0:
        return np.concatenate((h, theirs), axis=1), JoinCache(name, slice(0, C), slice(C, 2 * C))
    return np.concatenate((theirs, h), axis=1), JoinCache(name, slice(C, 2 * C), slice(0, C))


def join_backward(dout, cache, link):
    """forward: joined = [h_A, h_B] on both ranks, and each rank's next layer used all of it,
    so dL/dh_A = dout_on_A[:, A's part] + dout_on_B[:, A's part]: keep this tower's part of
    dout, send the other's part home, add what comes back. Returns: dh (N, C, ...)."""
    theirs = link.swap(link.phase + cache.name + " backward", dout[:, cache.other])
    return dout[:, cache.own] + theirs


def into_conv3(h, link):
    """Crossing 1 of Figure 2: conv3's kernels see all of conv2's maps, both towers' (pool2's
    output: (N, 128, 7, 7) each way for cifar, (N, 128, 13, 13) for paper)."""
    return join_forward(h, link, "into_conv3")


def into_fc6(h, link):
    """Crossing 2: fc6's units see all of conv5's pooled features, both towers' (flattened:
    (N, 1152) each way for cifar, (N, 4608) for paper)."""
    return join_forward(h, link, "into_fc6")


def into_fc7(h, link):
    """Crossing 3: fc7's units see all 4096 of fc6's, both towers' ((N, 2048) each way)."""
    return join_forward(h, link, "into_fc7")


def into_fc8(h, link):
    """Crossing 4: fc8's outputs see all 4096 of fc7's units ((N, 2048) each way)."""
    return join_forward(h, link, "into_fc8")


CROSSINGS = {"into_conv3": into_conv3, "into_fc6": into_fc6, "into_fc7": into_fc7,
             "into_fc8": into_fc8}


# --- LRN across the split: the halo ---------------------------------------------------------

class HaloCache(NamedTuple):
    name: str
    lrn: tuple        # the layer's cache (LRNCache) for the widened input
    own: slice        # this tower's channels in the widened input
    halo: slice       # the borrowed channels


def lrn_halo_forward(h, link, name, ops, *, size, **constants):
    """This tower's share of lrn_forward over all channels of both towers.

    The window of channel c is c - size//2 ... c + (size-1)//2. Tower A's top channels reach
    into B's first (size-1)//2; B's bottom channels into A's last size//2. Each tower sends the
    channels the other needs, normalises its own channels with the borrowed ones beside them
    (the window is still clipped at the real edges, 0 and the last channel), and keeps its own.
    Inputs: h (N, C, H, W), this tower's channels. Returns: out (N, C, H, W), cache."""
    before, after = size // 2, (size - 1) // 2
    N, C = h.shape[:2]
    if link.tower == 0:
        halo = link.swap(link.phase + name, h[:, C - before:], (N, after) + h.shape[2:])
        wide = np.concatenate((h, halo), axis=1)                   # (N, C + after, H, W)
        own, borrowed = slice(0, C), slice(C, C + after)
    else:
        halo = link.swap(link.phase + name, h[:, :after], (N, before) + h.shape[2:])
        wide = np.concatenate((halo, h), axis=1)                   # (N, before + C, H, W)
        own, borrowed = slice(before, before + C), slice(0, before)
    out, cache = ops.lrn_forward(wide, size=size, **constants)
    return np.ascontiguousarray(out[:, own]), HaloCache(name, cache, own, borrowed)


def lrn_halo_backward(dout, cache, link, ops):
    """dL/da_j = g_j s_j^(-beta) - 2 alpha beta a_j sum_{i : j in win(i)} g_i b_i / s_i
    (layers/lrn.py): the sum runs over outputs i of both towers near the boundary. lrn_backward
    on the widened input, with no gradient on the borrowed channels' outputs (they are the
    other tower's, and it accounts for them), gives this tower's outputs' part of every
    dL/da_j, the borrowed channels' included. Those go home; the other tower's part of ours
    comes back and is added. Returns: dx (N, C, H, W)."""
    dwide = np.zeros(cache.lrn.x.shape, dout.dtype)
    dwide[:, cache.own] = dout
    dx_wide = ops.lrn_backward(dwide, cache.lrn)
    dx = np.ascontiguousarray(dx_wide[:, cache.own])
    N, C = dx.shape[:2]
    size = cache.lrn.size
    before, after = size // 2, (size - 1) // 2
    if link.tower == 0:   # B's bottom outputs pulled on A's last `before` channels
        back = link.swap(link.phase + cache.name + " backward", dx_wide[:, cache.halo],
                         (N, before) + dx.shape[2:])
        dx[:, C - before:] += back
    else:                 # A's top outputs pulled on B's first `after` channels
        back = link.swap(link.phase + cache.name + " backward", dx_wide[:, cache.halo],
                         (N, after) + dx.shape[2:])
        dx[:, :after] += back
    return dx


# --- the logits -------------------------------------------------------------------------

def gather_logits_forward(h, link, num_classes):
    """fc8's classes from both towers: (N, 5) each way -> (N, 10) on both ranks.
    Returns: logits (N, classes), cache (this tower's columns)."""
    mine, theirs = own_rows(num_classes, link.tower), own_rows(num_classes, link.other)
    recv = link.swap(link.phase + "gather_logits", h, (h.shape[0], theirs.stop - theirs.start))
    logits = np.concatenate((h, recv) if link.tower == 0 else (recv, h), axis=1)
    return logits, mine


def gather_logits_backward(dlogits, own):
    """Both ranks computed the same loss from the same logits, hence the same dlogits: each
    keeps its own classes' columns, and nothing crosses."""
    return np.ascontiguousarray(dlogits[:, own])


# --- the plan -----------------------------------------------------------------------------

def tower_plan(arch, fuse_conv_relu=False):
    """`model.layer_plan(arch, fuse_conv_relu)` for one tower: convolutions of groups=2 become
    this tower's group (groups=1 on its own channels), every layer keeps its own half of the
    outputs, and the exchanges are inserted where a layer needs both towers' inputs: before a
    groups=1 convolution (other than conv1, which reads the image) and before a dense layer
    (and the dropout on its input). Returns [(name, kind, options)] with kinds of layer_plan plus
    "join" (a crossing of Figure 2) and "logits" (gather_logits); lrn becomes the halo LRN.
    """
    plan, split = [], False      # split: the activations are divided between the towers
    full = layer_plan(arch, fuse_conv_relu)
    for i, (name, kind, opts) in enumerate(full):
        if kind in ("conv", "conv_relu"):
            if opts["groups"] == 1 and split:
                plan.append((f"into_{name}", "join", {}))
            elif opts["groups"] != 1 and (opts["groups"] != TOWERS or not split):
                raise TinyAlexError(f"{arch.name}: {name} has groups={opts['groups']}; the towers "
                                    "take groups=1 or 2 on a split input")
            plan.append((name, kind, dict(opts, groups=1)))
            split = True
        elif kind in ("dropout", "dense") and split:
            dense = next(n for n, k, _ in full[i:] if k == "dense")
            plan.append((f"into_{dense}", "join", {}))
            plan.append((name, kind, opts))
            split = kind == "dense"
        else:
            plan.append((name, kind, opts))
            split = split or kind == "dense"
    plan.append(("logits", "logits", {}))
    crossings = tuple(n for n, k, _ in plan if k == "join")
    if crossings != FIGURE_2:
        raise TinyAlexError(f"{arch.name}: the towers would cross at {crossings}, not at the "
                            f"paper's {FIGURE_2}")
    return plan


# --- one tower ------------------------------------------------------------------------------

class TowerAlexNet(AlexNet):
    """One tower of an AlexNet: this rank's rows of every parameter, and the model's forward
    and backward walks along `tower_plan`, whose steps are AlexNet's plus the exchanges with
    the other tower through `link` (and the halo LRN in place of the LRN). The same interface
    as model.AlexNet for the trainer: params, loss, forward."""

    def __init__(self, model, link):
        self.arch, self.name, self.input_shape = model.arch, model.name, model.input_shape
        self.num_classes, self.dtype, self.route, self.ops = (model.num_classes, model.dtype,
                                                             model.route, model.ops)
        self.link = link
        self.tower = link.tower
        self.plan = tower_plan(model.arch, ROUTES[model.route].fuses_conv_relu)
        # this tower's rows of the full initial weights (copies: the full model is dropped)
        self.params = {name: np.array(value[own_rows(len(value), self.tower)])
                       for name, value in model.params.items()}

    def forward_steps(self, train, rng):
        """AlexNet's forward steps, and the crossings of Figure 2 (the whole batch comes in on
        both ranks; the logits go out on both)."""
        ops, link = self.ops, self.link
        link.phase = "" if train else "eval "
        return dict(super().forward_steps(train, rng),
                    join=lambda h, name, o: CROSSINGS[name](h, link),
                    lrn=lambda h, name, o: lrn_halo_forward(h, link, name, ops, **o),
                    logits=lambda h, name, o: gather_logits_forward(h, link, self.num_classes))

    def backward_steps(self):
        ops, link = self.ops, self.link
        return dict(super().backward_steps(),
                    join=lambda d, c, need_dx: join_backward(d, c, link),
                    lrn=lambda d, c, need_dx: lrn_halo_backward(d, c, link, ops),
                    logits=lambda d, c, need_dx: gather_logits_backward(d, c))

    def loss(self, x, y, **options):
        """As AlexNet.loss; the loss and logits are the same on both ranks, the gradients are
        this tower's."""
        result = super().loss(x, y, **options)
        if options.get("train", True):
            self.link.traffic.steps += 1
        return result


# --- what the trainer gets ----------------------------------------------------------------

class Towers(Ranks):
    """The `parallel` hook of trainer.Run for two towers (see ranks.py)."""

    def __init__(self, comm):
        super().__init__(comm)
        self.link = Link(comm, self.traffic)
        self.shapes = None

    def wrap(self, model):
        self.shapes = param_shapes(model.arch, model.num_classes)
        return TowerAlexNet(model, self.link)

    def _gather(self, halves):
        """Rank 0: the whole arrays, A's rows then B's (rank 1 sends its rows); rank 1: None."""
        whole = {} if self.is_root else None
        for name, mine in halves.items():
            if self.is_root:
                shape = self.shapes[name]
                theirs = np.empty((shape[0] - len(mine),) + shape[1:], mine.dtype)
                timed(self.traffic, "save checkpoint", 0, lambda: self.comm.Recv(theirs, source=1))
                whole[name] = np.concatenate((mine, theirs))
            else:
                mine = np.ascontiguousarray(mine)
                timed(self.traffic, "save checkpoint", mine.nbytes, lambda: self.comm.Send(mine, dest=0))
        return whole

    def full_state(self, params, optimizer):
        """The single-process parameters and optimizer state, on rank 0 (None, None elsewhere)."""
        return self._gather(params), self._gather(optimizer)

    def local_checkpoint(self, ckpt):
        """A single-process checkpoint cut to this tower's rows."""
        cut = lambda group: {k: v[own_rows(len(v), self.rank)] for k, v in group.items()}  # noqa: E731
        return replace(ckpt, params=cut(ckpt.params), optimizer=cut(ckpt.optimizer),
                       trained=cut(ckpt.trained))
