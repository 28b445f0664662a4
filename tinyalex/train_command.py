"""The `train` command (`python train.py ...`, `python -m tinyalex train ...`): options in,
a trained run directory out, on this process or on several (tinyalex/mpi/launch.py calls
run_train with its MPI processes)."""

import json
import os
import sys
import time
import uuid

from . import startup
from .checkpoint import describe_position, read_meta
from .outfiles import atomic_write
from .errors import TinyAlexError
from .options import explicit_options, raise_error, resume_config
from .processes import OneProcess
from .rundir import RunDir
from .scoring import views_line
from .trainer import Run, write_config
from .warm_up import warm_up
from .words import plural


def run_train(args, parser, argv, processes=None):
    """Train or resume; the run directory's rules: tinyalex/rundir.py and docs/runs.md. SIGTERM
    is handled like Ctrl-C (save, then exit 143). On several processes (tinyalex/mpi/) only
    the root keeps the run directory and writes."""
    processes = OneProcess() if processes is None else processes
    explicit = explicit_options(parser, argv)
    ckpt_path = meta = None
    if args.resume:
        config, out, ckpt_path, meta = resume_config(args, parser, explicit)
    else:
        config = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "command")}
        out = args.out or os.path.join("runs", f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    config["out"] = out
    for key in ("data", "data_dir"):          # absolute: evaluate finds them from anywhere
        if config.get(key):
            config[key] = os.path.abspath(config[key])
    args.batch_size = config["batch_size"]   # the run's, which cli._run names if memory runs out
    if meta is not None and _finished(meta, config) and os.path.exists(os.path.join(out, "test.json")):
        print(f"{out} holds a finished run ({config['epochs']} of {config['epochs']} epochs; "
              f"its final scores are in {os.path.join(out, 'test.json')}): nothing to resume")
        return 0
    if config.get("threads"):
        from layers.fast import threads
        threads.set_num_threads(config["threads"])
    with processes.stop_on_signals() as signals:
        try:
            if not processes.is_root:
                return _train(config, out, ckpt_path, signals, processes)
            with RunDir(out) as run_dir:
                if meta is None:
                    run_dir.check_new()
                    config["run_id"] = uuid.uuid4().hex
                elif not run_dir.run_files():      # a new run directory, from that checkpoint
                    config["run_id"] = uuid.uuid4().hex
                    config["resumed_from"] = os.path.abspath(ckpt_path)
                else:
                    run_dir.check_resume(ckpt_path, meta)
                    config.setdefault("run_id", uuid.uuid4().hex)
                    return _train(config, out, ckpt_path, signals, processes, same_run=True)
                return _train(config, out, ckpt_path, signals, processes)
        except KeyboardInterrupt:
            print(f"{_signal_word(signals)}: stopped at once; {_saved(out)}", file=sys.stderr)
            return signals.exit_code


def _train(config, out, ckpt_path, signals, processes, same_run=False):
    """Train; `same_run`: resuming in the run's own directory, whose config.json is then
    rewritten (with any new --lr) only at the first save, so that a resume that fails at
    once leaves the run as it was."""
    root = processes.is_root
    log = print
    warm_up(route=config.get("route", "fast"))   # Numba loads the kernels while the data are read
    run = Run(config, out, resume_from=ckpt_path, log=log, processes=processes)
    log(f"data: {run.data.summary()}")
    if config["limit_train"] or config["limit_val"] or config.get("limit_test"):
        log(f"limited to {len(run.train_loader.labels)} train / "
            f"{len(run.val_loader.labels) if run.val_loader else 0} val"
            + (f" / {len(run.test_loader.labels)} test" if run.test_loader else "") + " images")
    log(f"model: {config['model']} ({sum(p.size for p in run.model.params.values()):,} parameters), "
        f"{plural(config['epochs'], 'epoch')} of {plural(len(run.train_loader), 'step')}, "
        f"batch {config['batch_size']}, {run.schedule.name} schedule; run directory {out}")
    ops = getattr(run.model, "ops", None)
    if hasattr(ops, "theirs"):                       # a student's folder (tinyalex/student.py)
        log(ops.describe())
    if ckpt_path and _finished({"epoch": run.progress.epoch, "batch": run.progress.batch}, config):
        log(f"resuming {ckpt_path}: training is complete ({plural(config['epochs'], 'epoch')}); "
            f"scoring the final parameters")
    elif ckpt_path:
        log(f"resuming {ckpt_path} at epoch {run.progress.epoch + 1}, batch {run.progress.batch}")
    if root and same_run:
        run.config_pending = True
    elif root:
        write_config(out, config)
    signals.armed = True
    status = run.train(stop_requested=lambda: signals.requested, show_progress=not config["no_progress"])
    signals.armed = False
    if status == "interrupted" or signals.received:   # (a signal during the last epoch's end)
        print(f"{_signal_word(signals)}: saved {os.path.join(out, 'last.npz')} ("
              f"{_saved_position(run)}); continue with: python train.py --resume {out}",
              file=sys.stderr)
        return signals.exit_code
    scores = run.final_scores(show_progress=not config["no_progress"] and root)
    best = run.progress.best_val_acc
    if best >= 0:
        log(f"best validation accuracy {100 * best:.2f}% ({os.path.join(out, 'best.npz')})")
    for split, name in (("val", "validation"), ("test", "test")):
        if f"{split}_top1" in scores and root:
            averaged = f"{split}_top1_trained" in scores
            log(f"{name}: {_scores_line(scores, split, '', 'average' if averaged else 'final')}")
            if averaged:
                log(f"{name}: {_scores_line(scores, split, '_trained', 'trained')}")
    if "test_top1" in scores and root:
        text = json.dumps({"headline": "test_top1_flip", **scores}, indent=2) + "\n"
        try:
            atomic_write(os.path.join(out, "test.json"), lambda f: f.write(text.encode()))
        except OSError as e:
            raise_error(f"cannot write {os.path.join(out, 'test.json')}: {e.strerror or e}; "
                        f"the run's checkpoints are saved in {out}")
    return 0


def _finished(meta, config):
    """Whether a checkpoint's position is the end of the run's last epoch."""
    return meta["epoch"] >= config["epochs"] and meta["batch"] == 0


def _scores_line(scores, split, tag, weights):
    """The end-of-run line of a split (scoring.views_line) from final_scores' dict; tag
    "_trained": the weights as trained, in a run that averages them."""
    views = {tta: tuple(scores[f"{split}_{what}{suffix}{tag}"] for what in ("loss", "top1", "top5"))
             for tta, suffix in (("none", ""), ("flip", "_flip"))}
    return views_line(views, weights)


def _saved_position(run):
    return describe_position({"epoch": run.progress.epoch, "batch": run.progress.batch})


def _signal_word(signals):
    return startup.describe(signals.name)


def _saved(out):
    """What OUT/last.npz holds, for the message of a run stopped at once."""
    last = os.path.join(out, "last.npz")
    try:
        meta = read_meta(last)
    except TinyAlexError:
        return "nothing was saved"
    return (f"{last} holds {describe_position(meta)}; continue with: python train.py "
            f"--resume {out}")
