"""Download a file with resume and checksum, and unpack a tar archive safely.

``download(url, dest, md5)``
    Streams ``url`` into ``dest + ".part"`` with a tqdm progress bar. A broken transfer is
    resumed with an HTTP ``Range: bytes=<size>-`` request, both within one call (a few
    retries) and across runs (the ``.part`` file is kept). Only when the md5 of the whole
    file matches is it renamed to ``dest`` (``os.replace`` is atomic), so ``dest`` either
    does not exist or is complete. On an md5 mismatch the ``.part`` file is removed.

``safe_extract(archive, dest_dir)``
    Unpacks into a fresh temporary directory inside ``dest_dir``, refusing members with an
    absolute path, a ``..`` component, links and device files (the classic tar-slip
    attacks), then moves the top-level entries into place. A corrupt or truncated archive
    leaves nothing behind.

Every failure is a :class:`tinyalex.errors.DataError` with a one-line message that says
what to do.
"""
import gzip
import hashlib
import http.client
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib

from tqdm import tqdm

from tinyalex.errors import DataError
from tinyalex.outfiles import new_folders_removed_on_failure

CHUNK = 1 << 20  # bytes read per network/disk operation


def md5_of(path: str) -> str:
    """Hex md5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: str, md5: str, *, retries: int = 3, timeout: float = 30.0,
             progress: bool = True) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``), check its md5, rename. Returns ``dest``.

    A folder made for ``dest`` is removed again if the download fails leaving it empty.
    """
    folder = os.path.dirname(os.path.abspath(dest))
    with new_folders_removed_on_failure(folder):
        os.makedirs(folder, exist_ok=True)
        return _download(url, dest, md5, retries=retries, timeout=timeout, progress=progress)


def _download(url, dest, md5, *, retries, timeout, progress):
    part = dest + ".part"
    by_hand = f"download {url} by hand and put it at {dest}"
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout=timeout, progress=progress)
            break
        except urllib.error.HTTPError as e:
            raise DataError(f"downloading {url} failed: the server answered HTTP {e.code} "
                            f"{e.reason}; try again later, or {by_hand}") from None
        except urllib.error.URLError as e:
            # no route, DNS failure, connection refused: nothing to retry
            raise DataError(f"cannot reach {url} ({e.reason}); no network? {by_hand}") from None
        except (OSError, http.client.HTTPException) as e:
            # the connection dropped mid-file: resume from what we have
            if attempt == retries:
                have = os.path.getsize(part) if os.path.exists(part) else 0
                raise DataError(f"downloading {url} failed after {retries + 1} attempts "
                                f"({type(e).__name__}: {e}); {have} bytes kept in {part}, "
                                f"run again to resume, or {by_hand}") from None
    got = md5_of(part)
    if got != md5:
        os.remove(part)
        raise DataError(f"md5 mismatch for {url}: got {got}, expected {md5}; removed the "
                        f"partial file {part}; run again to download it afresh, or {by_hand}")
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: str, *, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``; raises on any transfer problem."""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tinyalex"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:        # nothing left to send: .part is already whole
            return
        raise
    with response:
        if have and response.status != 206:  # server ignored the Range: start again
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f, \
                tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                     desc=os.path.basename(part[:-len(".part")]), disable=not progress,
                     leave=False) as bar:
            done = have
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                f.write(block)
                done += len(block)
                bar.update(len(block))
    if total is not None and done < total:   # the server closed the connection early
        raise http.client.IncompleteRead(b"", total - done)


# --------------------------------------------------------------------------------------

def _check_member(member: tarfile.TarInfo, archive: str) -> None:
    """Refuse anything but plain files and directories inside the extraction directory."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"refusing to extract {archive}: member {name!r} has an absolute path")
    if ".." in parts:
        raise DataError(f"refusing to extract {archive}: member {name!r} points outside "
                        f"the target directory ('..')")
    if member.issym() or member.islnk():
        raise DataError(f"refusing to extract {archive}: member {name!r} is a link")
    if not (member.isfile() or member.isdir()):
        raise DataError(f"refusing to extract {archive}: member {name!r} is not a regular "
                        f"file or directory")


def safe_extract(archive: str, dest_dir: str) -> list:
    """Extract ``archive`` (tar, tar.gz, ...) into ``dest_dir``; returns its top-level names.

    Members are written into ``dest_dir/.extract-XXXX`` and checked one by one as the
    archive streams past; only when the whole archive has been read are the top-level
    entries moved into ``dest_dir`` (an existing entry of the same name is replaced).
    """
    os.makedirs(dest_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest_dir)
    try:
        try:
            with tarfile.open(archive, "r|*") as tar:   # stream: one pass over the gzip
                for member in tar:
                    _check_member(member, archive)
                    target = os.path.join(tmp, member.name)
                    if member.isdir():
                        os.makedirs(target, exist_ok=True)
                        continue
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError) as e:
            raise DataError(f"{archive} is truncated or corrupt ({type(e).__name__}: {e}); "
                            f"delete it and download it again") from None
        except OSError as e:   # our side: disk full, permissions
            raise DataError(f"cannot extract {archive} into {dest_dir}: {e}") from None
        names = sorted(os.listdir(tmp))
        if not names:
            raise DataError(f"{archive} is empty")
        for name in names:
            final = os.path.join(dest_dir, name)
            if os.path.lexists(final):
                old = tempfile.mkdtemp(prefix=".old-", dir=dest_dir)
                os.replace(final, os.path.join(old, name))
                shutil.rmtree(old, ignore_errors=True)
            os.replace(os.path.join(tmp, name), final)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

