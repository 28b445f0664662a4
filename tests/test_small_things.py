"""The small things of a newcomer's first hour: install hints that match pyproject.toml and
the README, sample images that `predict` and `saliency` run on, a validation split that fits
a small folder, plural words, epoch lines within 80 columns, the console script's name, the
resolved learning rate in config.json, and no empty data folder left by a failed run."""

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["tinyalex", "layers", "gradcheck.py", "train.py"]


def _extras():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def _source_files():
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            yield path
        for folder, _, files in os.walk(path):
            yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


# --- install hints ---------------------------------------------------------------------

def test_every_install_hint_names_an_extra_in_the_readme_form():
    from tinyalex import export, mpi, torch_twin
    from tinyalex.errors import install_hint
    extras = _extras()
    with open(os.path.join(ROOT, "README.md")) as f:
        assert install_hint("test") in f.read()          # the README's own form
    for hint, extra in ((export.ONNX_HINT, "onnx"), (torch_twin.INSTALL_HINT, "torch"),
                        (mpi.INSTALL, "mpi")):
        assert install_hint(extra) in hint and extra in extras
    # every `pip install` the code writes is that form, of an extra pyproject.toml defines
    form = re.compile(r'pip install -e "\.\[(\w+|\{extra\})\]"')
    for path in _source_files():
        with open(path) as f:
            text = f.read()
        for at in (m.start() for m in re.finditer("pip install", text)):
            found = form.match(text, at)
            assert found, f"{path}: {text[at:at + 40]!r}"
            assert found.group(1) in extras or found.group(1) == "{extra}", path


def test_the_onnx_extra_brings_what_export_imports():
    names = {re.match(r"[\w-]+", p).group(0) for p in _extras()["onnx"]}
    with open(os.path.join(ROOT, "tinyalex", "export.py")) as f:
        imported = set(re.findall(r"^\s*import (onnx\w*)", f.read(), re.M))
    assert imported == {"onnx", "onnxruntime"} and imported <= names
