"""Sweeps: resumable stores, kill -9, packs, dask clusters, the CLI (dysonsgd.runs.sweep)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from dysonsgd._checks import InputError
from dysonsgd.cli import main
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.runs import files, store
from dysonsgd.runs.config import load_config, parse_config
from dysonsgd.runs.integrity import CHECKSUM
from dysonsgd.runs.sweep import (
    cells_per_pack,
    model_memory_bytes,
    pack_overhead_bytes,
    plan_packs,
    run_sweep,
)
from dysonsgd.train import train_ensemble

# 4 x 3 cells of 4 seeds; relu at T = 8 diverges for some seeds. A cell takes ~0.2 s
TINY = """
name = "tiny"
description = "test grid"

[grid]
temperature = [0.0625, 0.5, 2.0, 8.0]
inv_sigma_w = [4.0, 1.0, 0.0625]
seeds = 4

[training]
epochs = 200
snapshots = 5
seed = 7
activation = "relu"
n_data = 80
dtype = "float64"

[expect]
phases = [{ temperature = 0.0625, inv_sigma_w = 4.0, phase = "ordered" }]

[validate]
start_snapshot = 1
"""
#: store variables that legitimately differ between two runs of one config
TIMING = ("cell_wall_time_s", "cell_finished_at", "cell_session")
#: (git_commit: the checkout moves if a commit lands while the tests run)
TIMING_ATTRS = ("sessions", "created_at", "wall_time_s", "git_commit")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The config file and an uninterrupted in-process sweep of it."""
    base = tmp_path_factory.mktemp("tiny")
    path = base / "tiny.toml"
    path.write_text(TINY)
    summary = run_sweep(load_config(path), base / "reference.zarr")
    return path, base / "reference.zarr", summary


def _content(path: Path) -> tuple[dict, dict]:
    ds = store.open_sweep(path)
    arrays = {k: v.values for k, v in ds.variables.items() if k not in TIMING}
    # the integrity record covers the timing too: its entries for the training arrays must agree
    arrays[CHECKSUM] = arrays[CHECKSUM][..., :len(store.CELL_ARRAYS)]
    attrs = {k: v for k, v in ds.attrs.items() if k not in TIMING_ATTRS}
    return arrays, attrs


def _assert_same_store(path: Path, reference: Path) -> None:
    arrays, attrs = _content(path)
    ref_arrays, ref_attrs = _content(reference)
    assert attrs == ref_attrs
    assert arrays.keys() == ref_arrays.keys()
    for name, ref in ref_arrays.items():
        assert arrays[name].dtype == ref.dtype, name
        np.testing.assert_array_equal(arrays[name], ref, err_msg=name)
    assert store.completed_cells(path).all()
    report = store.verify_sweep(path)
    assert report["integrity_records"] and report["damaged"] == [], report["message"]


def _finished_at(path: Path) -> dict[tuple[int, int], float]:
    done = store.completed_cells(path)
    at = store.open_sweep(path)["cell_finished_at"].values
    return {(int(i), int(j)): float(at[i, j]) for i, j in zip(*np.nonzero(done), strict=True)}


# ------------------------------------------------------------------------------------------------
# the store of a sweep
# ------------------------------------------------------------------------------------------------


def test_store_equals_one_train_ensemble_over_the_grid(tiny):
    path, ref, summary = tiny
    cfg = load_config(path)
    assert summary["cells_computed"] == 12 and summary["cells_skipped"] == 0
    assert summary["model_steps"] == cfg.model_steps() == 12 * 4 * 200 * 20
    whole = train_ensemble(cfg.model, temperature=list(cfg.temperature),
                           sigma_w=list(cfg.sigma_w), n_seeds=cfg.seeds, epochs=cfg.epochs,
                           snapshots=cfg.snapshots, seed=cfg.seed, dtype=cfg.dtype,
                           progress=False)
    assert whole.diverged.any() and not whole.diverged.all()
    back = files.load_result(ref)
    for name in ("w2", "grad", "loss", "diverged", "diverged_epoch", "diverged_step", "group",
                 "teacher_w1", "teacher_w2", "teacher_w3", "temperature", "sigma_w",
                 "snapshot_epochs"):
        a, b = getattr(back, name), getattr(whole, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert back.config == cfg.model and back.seed == cfg.seed


def test_provenance_in_the_store(tiny):
    path, ref, _ = tiny
    cfg = load_config(path)
    ds = store.open_sweep(ref)
    attrs = ds.attrs
    assert attrs["fingerprint"] == cfg.fingerprint()
    assert json.loads(attrs["sweep_config"]) == json.loads(json.dumps(cfg.to_dict()))
    assert parse_config(json.loads(attrs["sweep_config"])) == cfg
    versions = json.loads(attrs["versions"])
    for pkg in ("dysonsgd", "numpy", "torch", "numba", "xarray", "zarr"):
        assert versions[pkg] and versions[pkg] != "not installed"
    assert "SeedSequence" in attrs["seed_scheme"] and attrs["seed"] == 7
    assert "git_commit" in attrs
    sessions = json.loads(attrs["sessions"])
    assert sessions[0]["device"] == "cpu" and sessions[0]["scheduler"] == "in-process"
    wall = ds["cell_wall_time_s"].values
    assert wall.shape == (4, 3) and (wall > 0).all()
    assert (ds["cell_session"].values == 0).all()
    np.testing.assert_array_equal(ds["spawn_key"].values, np.arange(4))


def test_resume_recomputes_only_missing_cells(tiny, tmp_path):
    path, ref, _ = tiny
    cfg = load_config(path)
    out = tmp_path / "s.zarr"
    first = run_sweep(cfg, out, pack_cells=5)
    before = _finished_at(out)
    again = run_sweep(cfg, out)
    assert (again["cells_computed"], again["cells_skipped"], again["model_steps"]) == (0, 12, 0)
    # forget three cells (as if killed before their markers): exactly those are recomputed
    import zarr

    marker = zarr.open_group(str(out), mode="r+")[store.MARKER]
    lost = [(0, 2), (3, 0), (3, 1)]
    for i, j in lost:
        marker[i, j] = 0
    third = run_sweep(cfg, out)
    assert (third["cells_computed"], third["cells_skipped"]) == (3, 9)
    after = _finished_at(out)
    assert all(after[c] == before[c] for c in before if c not in lost)
    assert all(after[c] > before[c] for c in lost)
    assert first["cells_per_pack"] == 5 and first["packs"] == 4  # rows of 3: 1 row per pack
    sessions = json.loads(store.open_sweep(out).attrs["sessions"])
    assert len(sessions) == 3
    assert set(store.open_sweep(out)["cell_session"].values.ravel()) == {0, 2}
    _assert_same_store(out, ref)


def test_store_of_another_config_is_refused(tiny, tmp_path):
    path, ref, _ = tiny
    other = parse_config(dict(load_config(path).to_dict(), training={"epochs": 3, "n_data": 80}))
    with pytest.raises(ValueError, match=r"different config.*another --out.*delete"):
        run_sweep(other, ref)
    # relabelling does not change the numbers: accepted, nothing to do
    same = parse_config(dict(load_config(path).to_dict(), name="renamed", expect={}))
    assert run_sweep(same, ref)["cells_computed"] == 0
    with pytest.raises(ValueError, match="pack_cells"):
        run_sweep(other, tmp_path / "new.zarr", pack_cells=0)
    with pytest.raises(ValueError, match="threads"):
        run_sweep(other, tmp_path / "new.zarr", threads=-1)
    assert not (tmp_path / "new.zarr").exists()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x").write_text("")
    with pytest.raises(ValueError, match="not a sweep store"):
        run_sweep(other, tmp_path / "plain")
    with pytest.raises(ValueError, match="does not exist"):
        run_sweep(other, tmp_path / "no" / "s.zarr")


def test_a_second_sweep_on_the_same_store_is_refused(tiny):
    from dysonsgd.runs.sweep import store_lock

    path, ref, _ = tiny
    with store_lock(ref), pytest.raises(ValueError, match="another sweep"):
        run_sweep(load_config(path), ref)


# ------------------------------------------------------------------------------------------------
# kill -9
# ------------------------------------------------------------------------------------------------


def _sweep_process(config: Path, out: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "dysonsgd", "sweep", str(config),
                                 "--out", str(out), "--pack", "1", "--quiet"], cwd=out.parent,
                                stdout=subprocess.DEVNULL, stderr=err)


def _n_done(out: Path) -> int:
    try:
        return int(store.completed_cells(out).sum())
    except Exception:  # not created yet
        return 0


def test_sigkill_three_times_then_resume_equals_uninterrupted_run(tiny, tmp_path):
    """A real ``dysonsgd sweep`` process is killed with SIGKILL at three random moments; the
    resumed store equals the uninterrupted one bit for bit and no complete cell is redone."""
    path, ref, _ = tiny
    out = tmp_path / "killed.zarr"
    rng = np.random.default_rng(20250601)
    seen: dict[tuple[int, int], float] = {}
    mid_run = 0
    for k in range(3):
        proc = _sweep_process(path, out, tmp_path / "sweep.log")
        try:
            if k == 0:  # anywhere from start-up (store creation included) into the first cells
                deadline = time.monotonic() + rng.uniform(0.5, 4.0)
                while time.monotonic() < deadline and _n_done(out) < 2 \
                        and proc.poll() is None:
                    time.sleep(0.01)
            else:  # after 1-3 more cells, at a random point of the next one
                target = _n_done(out) + int(rng.integers(1, 4))
                deadline = time.monotonic() + 60
                while _n_done(out) < target and proc.poll() is None \
                        and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.05))  # into the next cell, not past the end
            running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode in (-signal.SIGKILL, 0), (tmp_path / "sweep.log").read_text()
        if out.exists():
            now = _finished_at(out)  # the store stays readable after every kill
            assert all(now[c] == t for c, t in seen.items())  # complete cells untouched
            seen = now
            mid_run += running and 0 < len(now) < 12
    assert mid_run >= 2, "the kills should land while cells remain"
    final = run_sweep(load_config(path), out)
    assert final["cells_skipped"] == len(seen)
    assert final["cells_computed"] == 12 - len(seen)
    after = _finished_at(out)
    assert all(after[c] == t for c, t in seen.items())
    _assert_same_store(out, ref)


# ------------------------------------------------------------------------------------------------
# dask
# ------------------------------------------------------------------------------------------------


def test_dask_tasks_write_the_same_store(tiny, tmp_path):
    """The dask path (bounded submission, tasks writing their own cells, CPU sharing) on a
    threaded LocalCluster: quick; the process-based ones are tested below."""
    from distributed import Client, LocalCluster

    path, ref, _ = tiny
    out = tmp_path / "threads.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as lc, Client(lc) as client:
        summary = run_sweep(load_config(path), out, client=client, pack_cells=1)
    assert summary["cells_computed"] == 12 and summary["packs"] == 12
    assert summary["scheduler"].startswith("inproc://")
    _assert_same_store(out, ref)


@pytest.mark.slow
def test_local_cluster_with_two_workers_gives_identical_arrays(tiny, tmp_path, capsys):
    path, ref, _ = tiny
    out = tmp_path / "local.zarr"
    argv = ["sweep", str(path), "--out", str(out), "--cluster", "local", "--workers", "2",
            "--pack", "2", "--json", "--quiet"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scheduler"].startswith("tcp://") and summary["cells_computed"] == 12
    assert summary["packs"] == 8  # rows of 3 cells in packs of 2: (2 + 1) x 4
    _assert_same_store(out, ref)
    hosts = {s["scheduler"] for s in json.loads(store.open_sweep(out).attrs["sessions"])}
    assert hosts == {summary["scheduler"]}


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def test_separate_scheduler_and_worker_give_identical_arrays(tiny, tmp_path, capsys):
    from distributed import Client

    path, ref, _ = tiny
    sched_file = tmp_path / "scheduler.json"
    scheduler = _start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", str(sched_file)], tmp_path / "scheduler.log")
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            assert scheduler.poll() is None, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        worker = _start(["worker", address, "--nthreads", "1", "--nworkers", "1",
                         "--no-dashboard", "--no-nanny"], tmp_path / "worker.log")
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        out = tmp_path / "remote.zarr"
        assert main(["sweep", str(path), "--out", str(out), "--scheduler", address, "--json",
                     "--quiet"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["scheduler"] == address and summary["cells_computed"] == 12
        _assert_same_store(out, ref)
    finally:
        if worker is not None:
            _stop(worker)
        _stop(scheduler)


def test_unreachable_scheduler_is_a_clear_error(tiny, tmp_path, capsys, monkeypatch):
    from dysonsgd.runs import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", "1s")
    path, _, _ = tiny
    argv = ["sweep", str(path), "--out", str(tmp_path / "x.zarr"), "--scheduler",
            "tcp://127.0.0.1:9", "--quiet"]  # port 9 (discard): nothing listens
    assert main(argv) == 2
    assert "scheduler: cannot connect to 'tcp://127.0.0.1:9'" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists()


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------


def test_cli_sweeps_a_validation_config_and_reports(tiny, tmp_path, capsys):
    path, ref, _ = tiny
    out = tmp_path / "cli.zarr"
    assert main(["sweep", str(path), "--out", str(out), "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("cells_total", "cells_skipped", "cells_computed", "model_steps", "wall_time_s",
                "model_steps_per_s", "peak_rss_mb", "fingerprint"):
        assert key in summary
    assert summary["cells_total"] == summary["cells_computed"] == 12
    assert summary["model_steps_per_s"] > 0
    _assert_same_store(out, ref)
    # default store name, progress bar on stderr, table on stdout
    os.chdir(tmp_path)
    try:
        assert main(["sweep", str(path), "--pack", "12"]) == 0
    finally:
        os.chdir(Path(__file__).parent)
    captured = capsys.readouterr()
    assert (tmp_path / "tiny.zarr").is_dir()
    assert "cells 12/12" in captured.err and "model-step/s" in captured.err
    assert "cells_computed" in captured.out
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_validate_reads_the_store(tiny, tmp_path, capsys):
    """``dysonsgd validate CONFIG --run STORE`` takes the store as its run (verdicts aside)."""
    from dysonsgd.cli import COMMANDS

    if "dysonsgd.cli.validate" not in COMMANDS:
        pytest.skip("dysonsgd validate is not registered in this checkout")
    path, ref, _ = tiny
    code = main(["validate", str(path), "--run", str(ref), "--out", str(tmp_path / "report"),
                 "--json", "--quiet"])
    out = capsys.readouterr()
    assert code in (0, 1), out.err  # 2 would be a refused run
    assert json.loads(out.out)


@pytest.mark.slow
def test_figures_reads_the_store(tiny, tmp_path, capsys):
    """``dysonsgd figures STORE`` draws from the store like from a run file."""
    from dysonsgd.cli import COMMANDS

    if "dysonsgd.cli.figures" not in COMMANDS:
        pytest.skip("dysonsgd figures is not registered in this checkout")
    _, ref, _ = tiny
    assert main(["figures", str(ref), "--out", str(tmp_path / "fig"), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert written
    assert list((tmp_path / "fig").glob("*.png")) and list((tmp_path / "fig").glob("*.pdf"))


@pytest.mark.parametrize(("edit", "message"), [
    (("temperature = [", "temprature = ["), "[grid] temprature: unknown key"),
    (("seeds = 4", "seeds = \"4\""), "[grid] seeds: must be an integer"),
    (("temperature = [0.0625, 0.5, 2.0, 8.0]", "temperature = []"),
     "[grid] temperature: empty grid"),
])
def test_cli_refuses_bad_configs_before_training(tmp_path, capsys, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(TINY.replace(*edit))
    assert main(["sweep", str(path), "--out", str(tmp_path / "s.zarr")]) == 2
    err = capsys.readouterr().err
    assert f"bad.toml: {message}" in err
    assert not (tmp_path / "s.zarr").exists()


def test_cli_refuses_bad_options(tiny, tmp_path, capsys):
    path, _, _ = tiny
    out = str(tmp_path / "s.zarr")
    assert main(["sweep", str(path), "--out", out, "--pack", "0"]) == 2
    assert "pack" in capsys.readouterr().err
    assert main(["sweep", str(path), "--out", out, "--workers", "2"]) == 2
    assert "--cluster local" in capsys.readouterr().err
    assert main(["sweep", str(path), "--out", out, "--device", "tpu"]) == 2
    assert "device" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", str(path), "--cluster", "local", "--scheduler", "tcp://x:1"])
    assert not Path(out).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
def test_cuda_without_gpu_is_refused_before_any_store(tiny, tmp_path, capsys):
    path, _, _ = tiny
    out = tmp_path / "s.zarr"
    assert main(["sweep", str(path), "--out", str(out), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------
# packing and the memory estimate
# ------------------------------------------------------------------------------------------------


@given(st.sets(st.tuples(st.integers(0, 5), st.integers(0, 6)), min_size=1),
       st.integers(1, 20))
def test_plan_packs_covers_pending_cells_once_in_rectangles(pending, size):
    packs = plan_packs(sorted(pending), size)
    cells = [c for p in packs for c in p.cells]
    assert sorted(cells) == sorted(pending)  # each pending cell exactly once, nothing else
    for p in packs:
        assert 1 <= len(p) <= size
        assert len(set(p.rows)) == len(p.rows) and len(set(p.cols)) == len(p.cols)


def test_plan_packs_full_grid_shapes():
    grid = [(i, j) for i in range(12) for j in range(12)]
    assert [len(p) for p in plan_packs(grid, 26)] == [24] * 6  # two whole rows each
    assert [(p.rows, len(p.cols)) for p in plan_packs(grid, 5)][:3] == [((0,), 5), ((0,), 5),
                                                                      ((0,), 2)]
    assert len(plan_packs(grid, 144)) == 1
    with pytest.raises(ValueError, match="cells_per_pack"):
        plan_packs(grid, 0)


def test_memory_per_model_at_the_papers_sizes():
    paper = TeacherStudentConfig()
    # features + targets: 4000 x (32 + 1); initial evaluation: 4000 x (3 x 16 + 2); 10 W2-sized
    f32 = 4 * (4000 * 33 + 4000 * 50 + 10 * 512)
    assert model_memory_bytes(paper, "float32", 21, "cuda") == f32
    assert model_memory_bytes(paper, "float64", 21, "cuda") == 2 * f32
    shuffled = TeacherStudentConfig(data_order="shuffled")
    assert model_memory_bytes(shuffled, "float32", 21, "cuda") == f32 + 4 * 4000 * 33
    host = model_memory_bytes(paper, "float32", 21, "cpu")
    # snapshots of W2 and its gradient, 3 more W2-sized, the losses; one model's wave scratch
    # (features and targets 4000 x 33, snapshot buffers 2 x 21 x 512)
    assert host == (2 * 21 + 3) * 512 * 4 + 21 * 8 + (4000 * 33 + 2 * 21 * 512) * 4
    assert pack_overhead_bytes(paper) == 64 * 4000 * 67 * 8 + 256 * 2**20


def test_cuda_packs_fill_the_free_memory_up_to_the_torch_chunk():
    cfg = parse_config({"grid": {"temperature": [1.0] * 1 + [2.0], "sigma_w": [1.0, 2.0],
                                 "seeds": 100}, "training": {"epochs": 1}})
    per = model_memory_bytes(cfg.model, "float32", 21, "cuda")
    over = pack_overhead_bytes(cfg.model)
    free = int((over + 250 * per) / 0.8) + 1  # room for 250 models: 2 cells of 100
    assert cells_per_pack(cfg, "cuda", free_bytes=free, n_pending=1000) == 2
    # an 80 GB GPU holds far more than the torch backend trains at once (2e9 B of features)
    chunk = int(2e9 // (4000 * 33 * 4))
    assert cells_per_pack(cfg, "cuda", free_bytes=80 * 2**30, n_pending=1000) == chunk // 100
    with pytest.raises(ValueError, match="too little for one cell"):
        cells_per_pack(cfg, "cuda", free_bytes=int((over + 50 * per) / 0.8))


def test_cpu_packs_fill_simd_blocks_and_share_among_workers():
    cfg = parse_config({"grid": {"temperature": list(range(1, 13)),
                                 "sigma_w": list(range(1, 13)), "seeds": 10},
                        "training": {"epochs": 1}})
    # 8 blocks of 16 float32 lanes per thread
    assert cells_per_pack(cfg, "cpu", threads=2) == 8 * 16 * 2 // 10
    assert cells_per_pack(cfg, "cpu", threads=1, slots=4, n_pending=40) == 5
    assert cells_per_pack(cfg, "cpu", threads=64, n_pending=7) == 7


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sweep_matches_cpu_and_stays_within_the_memory_estimate(tiny, tmp_path):
    path, ref, _ = tiny
    cfg = load_config(path)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    summary = run_sweep(cfg, tmp_path / "gpu.zarr", device="cuda", pack_cells=12)
    peak = torch.cuda.max_memory_allocated() - base
    assert summary["packs"] == 1
    models = 12 * cfg.seeds
    assert peak <= models * model_memory_bytes(cfg.model, cfg.dtype, cfg.snapshots, "cuda") \
        + pack_overhead_bytes(cfg.model)
    _, n1, _, _ = cfg.model.widths
    assert peak >= models * cfg.model.n_data * n1 * 8  # the layer-1 features alone (float64)
    gpu, cpu = files.load_result(tmp_path / "gpu.zarr"), files.load_result(ref)
    finite = np.isfinite(cpu.loss)
    np.testing.assert_array_equal(np.isfinite(gpu.loss), finite)
    np.testing.assert_allclose(gpu.w2[~cpu.diverged], cpu.w2[~cpu.diverged], rtol=0,
                               atol=1e-10)


# ------------------------------------------------------------------------------------------------
# issue 13: locks for every spelling (class 4), damaged cells (class 3), Ctrl-C and full disks
# (class 8)
# ------------------------------------------------------------------------------------------------


def _spellings(ref: Path, tmp: Path) -> dict[str, str]:
    """Other paths to the store ``ref`` (relative ones are relative to ``ref.parent``)."""
    (tmp / "link.zarr").symlink_to(ref)
    (tmp / "parent").symlink_to(ref.parent)
    (ref.parent / "sub").mkdir(exist_ok=True)
    name = ref.name
    return {
        "absolute": str(ref), "relative": name, "./": f"./{name}", "trailing slash": f"{name}/",
        "trailing /.": f"{name}/.", "double slash": f".//{name}//", "via ..": f"sub/../{name}",
        "through the store": f"{name}/w2/..", "symlink to the store": str(tmp / "link.zarr"),
        "symlinked parent": str(tmp / "parent" / name),
    }


@pytest.mark.parametrize("held", ["absolute", "symlink to the store", "trailing slash"])
def test_the_lock_holds_for_every_spelling_of_the_path(tiny, tmp_path, monkeypatch, held):
    from dysonsgd.runs.sweep import store_lock

    path, ref, _ = tiny
    monkeypatch.chdir(ref.parent)
    spellings = _spellings(ref, tmp_path)
    before = store.store_attrs(ref)["sessions"]
    with store_lock(spellings[held]):
        for label, spelled in spellings.items():
            with pytest.raises(InputError, match="another sweep"):
                run_sweep(load_config(path), spelled)
            assert store.store_attrs(ref)["sessions"] == before, label  # nothing touched


def test_a_path_the_name_lock_misses_meets_the_directory_lock(tiny):
    """A spelling no path resolution unifies (a bind mount, another case on a case-insensitive
    file system) still reaches the store's inode: its directory lock refuses the sweep."""
    import fcntl

    path, ref, _ = tiny
    fd = os.open(ref, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process's sweep holds it
        with pytest.raises(InputError, match="another sweep"):
            run_sweep(load_config(path), ref)
    finally:
        os.close(fd)


def _chunk(out: Path, name: str, i: int, j: int) -> Path:
    import zarr

    arr = zarr.open_group(str(out), mode="r")[name]
    return out / name / arr.metadata.encode_chunk_key((i, j) + (0,) * (arr.ndim - 2))


def test_damaged_cells_are_detected_and_recomputed_on_resume(tiny, tmp_path, capsys):
    """The fault test of class 3: chunks of complete cells are removed, changed and truncated;
    --verify and every reader name those cells, and the next sweep recomputes exactly them,
    giving the uninterrupted store back bit for bit."""
    import shutil

    path, ref, _ = tiny
    out = tmp_path / "damaged.zarr"
    shutil.copytree(ref, out)
    damaged = {(1, 0): "w2", (2, 1): "grad", (0, 2): "loss", (3, 1): CHECKSUM}
    _chunk(out, "w2", 1, 0).unlink()
    data = bytearray(_chunk(out, "grad", 2, 1).read_bytes())
    data[len(data) // 2] ^= 0xFF
    _chunk(out, "grad", 2, 1).write_bytes(bytes(data))
    _chunk(out, "loss", 0, 2).write_bytes(b"\0" * 7)
    _chunk(out, CHECKSUM, 3, 1).unlink()
    before = _finished_at(out)
    assert main(["sweep", "--verify", str(out), "--json"]) == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert {tuple(d["cell"]): d["array"] for d in report["damaged"]} == damaged
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    assert main(["figures", str(out), "--out", str(tmp_path / "f")]) == 2
    err = capsys.readouterr().err
    assert "4 complete cells damaged" in err and "recomputed" in err and "Traceback" not in err
    assert not (tmp_path / "f").exists()
    assert main(["sweep", str(path), "--out", str(out), "--quiet", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["cells_damaged"], summary["cells_computed"]) == (4, 4)
    assert captured.err.count("recomputing it") == 4
    after = _finished_at(out)
    assert all(after[c] == t for c, t in before.items() if c not in damaged)
    assert all(after[c] > before[c] for c in damaged)
    _assert_same_store(out, ref)


def _stop_sweep_after(monkeypatch, packs: int, error: BaseException) -> None:
    """The sweep's training raises ``error`` once ``packs`` packs have been trained."""
    from dysonsgd.runs import sweep

    real, calls = sweep.train_pack, []

    def train_pack(*args, **kwargs):
        if len(calls) >= packs:
            raise error
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "train_pack", train_pack)


def _disk_full_after(monkeypatch, chunks: int) -> None:
    """The file system fills up after ``chunks`` more chunk files of w2 (inside zarr's own
    store, so the error travels the real path: zarr's event loop, the writer thread)."""
    import errno

    from zarr.storage import LocalStore

    real, count = LocalStore.set, []

    async def set_(self, key, value, *args, **kwargs):
        if key.startswith("w2/c/"):
            count.append(key)
            if len(count) > chunks:
                raise OSError(errno.ENOSPC, "No space left on device", key)
        return await real(self, key, value, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "set", set_)


#: a stopped sweep: name -> (stop(monkeypatch), exit status, words of the line)
STOPS = {
    "Ctrl-C while training": (lambda m: _stop_sweep_after(m, 2, KeyboardInterrupt()), 130,
                              "interrupted"),
    "disk full while writing": (lambda m: _disk_full_after(m, 5), 74, "no space left"),
}


@pytest.mark.parametrize("case", sorted(STOPS))
def test_a_stopped_sweep_says_what_it_kept_in_one_line(tiny, tmp_path, capsys, monkeypatch,
                                                       case):
    stop, status, words = STOPS[case]
    path, ref, _ = tiny
    out = tmp_path / "stopped.zarr"
    stop(monkeypatch)
    assert main(["sweep", str(path), "--out", str(out), "--pack", "3", "--quiet"]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    n = int(store.completed_cells(out).sum())
    assert 0 < n < 12
    assert words in err and f"{n} of 12 cells complete in {str(out)!r}, kept" in err
    assert "rerun the same command to resume" in err
    monkeypatch.undo()
    assert run_sweep(load_config(path), out)["cells_computed"] == 12 - n
    _assert_same_store(out, ref)


def test_an_unexpected_error_in_a_sweep_keeps_its_traceback(tiny, tmp_path, monkeypatch):
    import errno

    path, _, _ = tiny
    for error in (RuntimeError("internal bug"), OSError(errno.EIO, "I/O error")):
        _stop_sweep_after(monkeypatch, 0, error)
        with pytest.raises(type(error)):
            main(["sweep", str(path), "--out", str(tmp_path / "s.zarr"), "--quiet"])
        monkeypatch.undo()


@pytest.mark.slow
def test_ctrl_c_of_a_real_sweep_is_one_line(tiny, tmp_path):
    """SIGINT to a real ``dysonsgd sweep`` process once a cell is done: exit 130, one line on
    stderr, no traceback; the store it kept verifies (slow: a process start; the default run
    raises KeyboardInterrupt in-process, test_a_stopped_sweep_says_what_it_kept_in_one_line)."""
    path, _, _ = tiny
    out = tmp_path / "interrupted.zarr"
    proc = _sweep_process(path, out, tmp_path / "sweep.log")
    try:
        deadline = time.monotonic() + 120
        while _n_done(out) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "sweep.log").read_text()
    assert proc.returncode in (130, 0), err
    if proc.returncode == 130:  # (0: the sweep finished before the signal came)
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert "interrupted" in err and "kept; rerun the same command to resume" in err
    assert store.verify_sweep(out)["damaged"] == []
