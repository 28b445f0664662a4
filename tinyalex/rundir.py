"""Which run may write into a run directory, one run at a time, and what a failed run leaves.

The rules (docs/runs.md says them for users):

- A directory holds a run when it holds any of RUN_FILES. config.json names the run by a
  random run id, which every checkpoint of the run repeats in its config. A resume into a
  new directory starts a new run there (a new id; config.json says where it came from).
- A new run writes only into a directory that holds no run: missing, empty, or holding
  other files only.
- A resumed run writes into a directory that holds no run, or that holds the same run
  (the run ids agree) and no later state of it: its last.npz and metrics.csv are not ahead
  of the checkpoint resumed. Resuming an earlier state (best.npz) in place would replace
  the run's last.npz with it and leave metrics.csv listing epochs that no longer exist.
- While a run lives it holds an exclusive lock (flock) on OUT/.lock, removed when it ends;
  a second run in the same directory stops with an error instead of overwriting the first
  one's files.
- With the lock held, the temporary files of saves cut short by kill -9 (.last.npz.*.tmp,
  each as big as a checkpoint) are removed.
- A run that fails or is stopped before it saved a checkpoint removes what it wrote (its
  config.json), and the directories it made (OUT and any missing parents, when empty).
  Only the process holding the lock removes anything: of two runs started at the same
  moment on one new OUT, the one that lost the lock leaves the directory alone.
- A config.json alone (a run killed with kill -9 before its first checkpoint) holds
  nothing to continue: a new run in that directory removes it and says so.
"""

import csv
import glob
import json
import os

from .checkpoint import describe_position, read_meta
from .errors import CheckpointError, TinyAlexError
from .outfiles import missing_folders, remove_empty_folders

try:
    import fcntl
except ImportError:    # Windows: no lock, the other rules still hold
    fcntl = None

RUN_FILES = ("config.json", "metrics.csv", "curves.png", "last.npz", "best.npz", "test.json")
LOCK = ".lock"


class RunDirError(TinyAlexError):
    """The run directory cannot be used: it holds another run, it is in use, it is not writable."""


class RunDir:
    """`with RunDir(path) as run_dir:` the run directory, made if need be and locked.

    Then `run_dir.check_new()` or `run_dir.check_resume(...)` applies the rules of the module
    docstring. Leaving the block releases the lock; leaving it with an exception before
    OUT/`keeps` exists (last.npz for train.py; metrics.csv for torch-train, which keeps no
    checkpoint) removes the files the run wrote, and the directories it made. Only the
    process that holds the lock removes anything: a run that lost the race for the lock
    leaves the directory to the one that won it.
    """

    def __init__(self, path, log=print, keeps="last.npz"):
        self.path = path
        self.log = log
        self.keeps = keeps
        self.made = []               # the directories this run made, the leaf first
        self._lock = None
        self._before = set()

    # --- opening and closing -----------------------------------------------------------
    def __enter__(self):
        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise RunDirError(f"--out {path} is a file, not a directory; choose another --out")
        try:
            for attempt in range(3):
                self._make_dirs()
                self._before = set(os.listdir(path))
                try:
                    self._acquire()
                    break
                except FileNotFoundError:   # a run that failed at this moment removed its
                    if attempt == 2:        # empty directory: make it again
                        raise
        except RunDirError:
            raise                          # another run holds the directory: leave it alone
        except OSError as e:
            self._clean_up_unlocked()
            raise RunDirError(f"cannot write to --out {path}: {e.strerror or e}; choose "
                              f"another --out") from None
        except BaseException:              # Ctrl-C or SIGTERM while the directory is set up
            if self._lock is not None:
                self.__exit__(KeyboardInterrupt, None, None)
            else:
                self._clean_up_unlocked()
            raise
        self._remove_stale_temporaries()
        return self

    def _make_dirs(self):
        """Make the directory and its missing parents, remembering which this run made."""
        for directory in reversed(missing_folders(self.path)):     # the outermost first
            try:
                os.mkdir(directory)
                self.made.insert(0, directory)
            except FileExistsError:   # another run, started at the same moment, made it
                if not os.path.isdir(directory):
                    raise

    def _acquire(self):
        path = os.path.join(self.path, LOCK)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            if fcntl is None:
                break
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunDirError(f"{self.path} is in use by another tinyalex run (process "
                                  f"{holder}); wait for it to end, or choose another --out") from None
            # The run that held it may have removed the file as it ended: then this lock is on
            # a file nobody else will open; try again with the one at `path` now.
            try:
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._lock = fd
        try:                              # who holds it, for the message of the next run
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:                   # a full disk: the lock holds all the same
            pass

    def __exit__(self, kind, error, tb):
        failed = kind is not None
        try:
            if failed and not os.path.exists(os.path.join(self.path, self.keeps)):
                for name in (set(os.listdir(self.path)) - self._before) & set(RUN_FILES):
                    os.unlink(os.path.join(self.path, name))   # only what this run wrote
            os.unlink(os.path.join(self.path, LOCK))            # while still holding it
        except OSError:
            pass
        os.close(self._lock)              # releases the lock
        self._lock = None
        if failed:
            remove_empty_folders(self.made)
        return False

    def _clean_up_unlocked(self):
        """A failure before the lock was taken: remove the lock file and the directories this
        run made only if the lock can be had now (then no other run is using the directory);
        otherwise leave everything to the run that holds it."""
        if os.path.exists(os.path.join(self.path, LOCK)):
            try:
                self._acquire()
            except (RunDirError, OSError):
                return
            try:
                os.unlink(os.path.join(self.path, LOCK))
            except OSError:
                pass
            os.close(self._lock)
            self._lock = None
        remove_empty_folders(self.made)

    def _remove_stale_temporaries(self):
        stale = [p for name in RUN_FILES for p in glob.glob(os.path.join(self.path, f".{name}.*.tmp"))]
        for p in stale:
            try:
                os.unlink(p)
            except OSError:
                pass
        if stale:
            self.log(f"removed {len(stale)} temporary file(s) of saves cut short in {self.path}: "
                     f"{', '.join(sorted(os.path.basename(p) for p in stale))}")

    # --- the rules -----------------------------------------------------------------------
    def run_files(self):
        return [name for name in RUN_FILES if os.path.exists(os.path.join(self.path, name))]

    def check_new(self):
        """A new run: the directory must hold no run."""
        found = self.run_files()
        if found == ["config.json"]:          # its run died before its first save
            os.unlink(os.path.join(self.path, "config.json"))
            self._before.discard("config.json")
            self.log(f"removed {self.path}/config.json, left by a run stopped before its "
                     f"first checkpoint")
            return
        if not found:
            return
        if "last.npz" in found:
            raise RunDirError(f"{self.path} already holds a run ({', '.join(found)}): continue "
                              f"it with --resume {self.path}, or choose another --out")
        raise RunDirError(f"{self.path} already holds files of a run ({', '.join(found)}); "
                          f"choose another --out, or move them away")

    def check_resume(self, ckpt_path, meta):
        """A resumed run from checkpoint `ckpt_path` (whose meta is `meta`): the directory
        must hold no run, or the same run and no later state of it."""
        found = self.run_files()
        if not found:
            return
        in_place = _same_path(os.path.dirname(os.path.abspath(ckpt_path)), self.path)
        ours = run_id_of(self.path)
        theirs = meta["config"].get("run_id")
        # in its own directory a checkpoint is that run's unless the ids disagree (a run from
        # before run ids has none); elsewhere the ids must agree
        other = (ours is not None and theirs is not None and ours != theirs) if in_place else (
            ours is None or ours != theirs)
        if other:
            home = os.path.dirname(ckpt_path) or "."
            raise RunDirError(f"{self.path} holds another run ({', '.join(found)}) than "
                              f"{ckpt_path}; to continue that checkpoint, drop --out (it "
                              f"continues in {home}) or pass an --out that holds no run")
        last = os.path.join(self.path, "last.npz")
        if os.path.exists(last) and not _same_path(last, ckpt_path):
            try:
                later = read_meta(last)
                position = (int(later["epoch"]), int(later["batch"]))
            except (CheckpointError, KeyError, TypeError, ValueError) as e:
                raise RunDirError(f"{last} is damaged ({e}); move it away to resume "
                                  f"{ckpt_path} here, or pass a new --out") from None
            if position > (meta["epoch"], meta["batch"]):
                raise RunDirError(
                    f"{ckpt_path} is an earlier state ({describe_position(meta)}) of the run "
                    f"in {self.path}, whose last.npz is at {describe_position(later)}: "
                    f"continue that run with --resume {self.path}, or pass a new --out to "
                    f"start a new run directory from {ckpt_path}")
        rows = metrics_rows(self.path)
        if rows > meta["epoch"]:
            raise RunDirError(f"{self.path}/metrics.csv lists {rows} epochs, {ckpt_path} only "
                              f"{meta['epoch']}: resuming it here would lose them; pass a new "
                              f"--out to start a new run directory from {ckpt_path}")


def run_id_of(path):
    """The run id in PATH/config.json, or None (no config.json, or one without an id)."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    return config.get("run_id") if isinstance(config, dict) else None


def metrics_rows(path):
    """The number of epochs PATH/metrics.csv lists (0 without one)."""
    try:
        with open(os.path.join(path, "metrics.csv"), newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return 0


def _same_path(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
