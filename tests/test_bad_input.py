"""Issue 13: bad input at every entry point is refused cleanly, before any work, naming its cause.

Table-driven: each case runs the ``dysonsgd`` command (or calls the API) with one bad input and
asserts the exit status 2 (or :class:`InputError`), that no traceback is printed, that the
message names the option, parameter or file, and that nothing was written. The functions that do
the work (training, integrating, drawing) are replaced by tripwires, so a check that came after
the work would fail the test instead of merely wasting time.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dysonsgd._checks import InputError
from dysonsgd.cli import main

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

#: the functions that start the work of each writing command
WORK = (
    ("dysonsgd.train", "train_ensemble"),
    ("dysonsgd.analysis.predict", "predict_run"),
    ("dysonsgd.runs.validate", "validate"),
    ("dysonsgd.runs.sweep", "run_sweep"),
    ("dysonsgd.plots.paper", "paper_figures"),
    ("dysonsgd.plots.monitor", "monitor_report"),
)


@pytest.fixture
def tripwires(monkeypatch):
    """Make every work function fail loudly: a late check would then be seen."""
    import importlib

    def boom(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    for module, name in WORK:
        monkeypatch.setattr(importlib.import_module(module), name, boom)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(argv: list[str], capsys, *, names: str) -> str:
    """Run ``argv``; assert exit 2, one clean error naming ``names``; return stderr."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error:" in err and names in err, err
    return err


# --------------------------------------------------------------------------------------------
# class 1: output paths are checked before any work
# --------------------------------------------------------------------------------------------

#: command line of each writing command with its output option as OUT (inputs need not exist:
#: the output check comes first)
FILE_OUTPUTS = {
    "train --out": ["train", "--temperature", "1", "--sigma-w", "1", "--epochs", "1",
                    "--no-progress", "--out", "OUT"],
    "train --out (batch axis)": ["train", "--temperature", "1", "--sigma-w", "1", "--epochs",
                                 "1", "--batch-size", "4", "8", "--no-progress", "--out", "OUT"],
    "sde --out": ["sde", "dyson", "--from", "missing-run.nc", "--out", "OUT"],
    "validate --save-run": ["validate", "quick", "--out", "report", "--save-run", "OUT"],
}
DIR_OUTPUTS = {
    "validate --out": ["validate", "quick", "--out", "OUT"],
    "figures --out": ["figures", "missing-run.nc", "--out", "OUT"],
    "sweep --out": ["sweep", "quick", "--quiet", "--out", "OUT"],
    "monitor report --out": ["monitor", "report", "missing-store", "--out", "OUT"],
}

def _file(path: Path) -> Path:
    path.write_text("")
    return path


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


#: bad file paths: name -> (make(tmp) -> path, words the message must contain)
BAD_FILES = {
    "is a directory": (lambda t: _dir(t / "x.nc"), "is a directory"),
    "parent missing": (lambda t: t / "nowhere" / "x.nc", "does not exist"),
    "parent is a file": (lambda t: _file(t / "f") / "x.nc", "is not a directory"),
}
#: bad directory paths, likewise
BAD_DIRS = {
    "is a file": (lambda t: _file(t / "d"), "is a file"),
    "ancestor is a file": (lambda t: _file(t / "f") / "sub" / "d", "is a file"),
}


def _option(label: str) -> str:
    return label.split(" (")[0].split()[-1]


@pytest.mark.parametrize("bad", sorted(BAD_FILES))
@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS))
def test_bad_output_file_is_refused_before_work(command, bad, tmp_path, capsys, monkeypatch,
                                                tripwires):
    monkeypatch.chdir(tmp_path)
    make, words = BAD_FILES[bad]
    out = make(tmp_path)
    before = _tree(tmp_path)
    argv = [str(out) if a == "OUT" else a for a in FILE_OUTPUTS[command]]
    err = _refused(argv, capsys, names=_option(command))
    assert words in err and (str(out) in err or str(out.parent) in err)
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("bad", sorted(BAD_DIRS))
@pytest.mark.parametrize("command", sorted(DIR_OUTPUTS))
def test_bad_output_dir_is_refused_before_work(command, bad, tmp_path, capsys, monkeypatch,
                                               tripwires):
    monkeypatch.chdir(tmp_path)
    make, words = BAD_DIRS[bad]
    out = make(tmp_path)
    before = _tree(tmp_path)
    argv = [str(out) if a == "OUT" else a for a in DIR_OUTPUTS[command]]
    err = _refused(argv, capsys, names=_option(command))
    assert words in err
    assert _tree(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
@pytest.mark.parametrize("command", sorted(FILE_OUTPUTS) + sorted(DIR_OUTPUTS))
def test_unwritable_output_is_refused_before_work(command, tmp_path, capsys, monkeypatch,
                                                  tripwires):
    monkeypatch.chdir(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        table = FILE_OUTPUTS if command in FILE_OUTPUTS else DIR_OUTPUTS
        out = locked / ("x.nc" if table is FILE_OUTPUTS else "d")
        argv = [str(out) if a == "OUT" else a for a in table[command]]
        err = _refused(argv, capsys, names=_option(command))
        assert "not writable" in err
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o700)


def test_output_checks_accept_good_paths(tmp_path):
    from dysonsgd.runs.paths import check_output_dir, check_output_file

    (tmp_path / "old.nc").write_text("")  # an existing file is overwritten: allowed
    for name in ("new.nc", "old.nc"):
        assert check_output_file("--out", tmp_path / name, suffixes=(".nc",)).name == name
    for d in (tmp_path, tmp_path / "a" / "b"):  # existing, or made with its parents
        assert check_output_dir("--out", d) == d
    assert not (tmp_path / "a").exists()  # the check only looks
    with pytest.raises(InputError, match=r"--out must end in \.nc"):
        check_output_file("--out", tmp_path / "x.csv", suffixes=(".nc",))
