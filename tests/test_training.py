"""Tests of dysonsgd.train and the network of dysonsgd.model: exactness against the per-model
NumPy loop, gradients against autograd, batching invariance, divergence handling, input checks
and the phase-diagram sanity checks of section 3 on small ensembles."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dysonsgd.measure import observables as obs
from dysonsgd.measure import spectrum
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.model.network import per_sample_gradients
from dysonsgd.train import (
    EnsembleResult,
    release_snapshot_epochs,
    snapshot_epochs,
    train_ensemble,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from numpy_baseline import train_single

F64 = torch.float64
WIDTHS = (3, 32, 16, 1)


def external_model(seed: int, n_data: int, sigma_w: float = 0.5, widths=WIDTHS):
    """Teacher, inputs and W2(0) drawn outside the package (a different generator)."""
    n0, n1, n2, n3 = widths
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 1 / math.sqrt(n0), (n1, n0))
    w2t = rng.normal(0, 1 / math.sqrt(n1), (n2, n1))
    w3 = rng.normal(0, 1 / math.sqrt(n2), (n3, n2))
    x = rng.normal(0, 1, (n_data, n0))
    w2_init = rng.normal(0, sigma_w / math.sqrt(n1), (n2, n1))
    return x, w1, w2t, w3, w2_init


# ------------------------------------------------------------------------------------------------
# exactness against the NumPy per-model loop (float64, fixed order)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_float64_matches_numpy_loop_after_2000_steps(activation, backend):
    x, w1, w2t, w3, w2_init = external_model(11, 4000)
    cfg = TeacherStudentConfig(activation=activation)
    temp = 2.0**-6
    res = train_ensemble(cfg, temperature=temp, sigma_w=0.5, epochs=2, snapshots=3, seed=0,
                         dtype=F64, progress=False, teacher_weights=(w1, w2t, w3), inputs=x,
                         student_init=w2_init, backend=backend)
    ref = train_single(x, w1, w2t, w3, w2_init, lr=temp * 4, epochs=2, activation=activation,
                       snapshot_epochs=[0, 1, 2])
    assert res.model_steps == 2000
    assert not res.diverged.any()
    # the model moved: W2 after 2000 steps is far from W2(0), and identical to the reference
    assert np.abs(ref["w2"][-1] - w2_init).max() > 1e-2
    np.testing.assert_allclose(res.w2[0, 0, 0], ref["w2"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.grad[0, 0, 0], ref["grad"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.loss[0, 0, 0], ref["loss"], rtol=1e-10, atol=1e-14)


def test_float32_kernel_agrees_with_torch_and_float64():
    # low temperatures: at T ~ 1 SGD is chaotic and rounding differences grow ~1e4x per epoch
    cfg = TeacherStudentConfig(n_data=400)
    kw = dict(temperature=[2.0**-5, 2.0**-3], sigma_w=[0.125, 2.0], n_seeds=3, epochs=3,
              snapshots=4, seed=5, progress=False)
    k32 = train_ensemble(cfg, dtype=torch.float32, backend="numba", **kw)
    t32 = train_ensemble(cfg, dtype=torch.float32, backend="torch", **kw)
    k64 = train_ensemble(cfg, dtype=F64, backend="numba", **kw)
    t64 = train_ensemble(cfg, dtype=F64, backend="torch", **kw)
    assert k32.w2.dtype == np.float32 and k64.w2.dtype == np.float64
    np.testing.assert_allclose(k64.w2, t64.w2, rtol=0, atol=1e-12)
    np.testing.assert_allclose(k64.grad, t64.grad, rtol=0, atol=1e-12)
    scale = np.abs(k64.w2).max()
    # float32 (rational tanh in the kernel, exact tanh in torch) against float64: rounding only
    assert np.abs(k32.w2 - k64.w2).max() < 2e-5 * scale
    assert np.abs(t32.w2 - k64.w2).max() < 2e-5 * scale
    np.testing.assert_allclose(k32.loss, k64.loss, rtol=1e-3)


def test_shuffled_order_matches_numpy_loop_and_differs_from_fixed():
    from dysonsgd.model.draws import epoch_permutation

    cfg = TeacherStudentConfig(n_data=200, data_order="shuffled")
    kw = dict(temperature=2.0**-3, sigma_w=0.5, n_seeds=2, epochs=3, snapshots=4, seed=7,
              dtype=F64, progress=False)
    res = train_ensemble(cfg, **kw)
    tor = train_ensemble(cfg, backend="torch", **kw)
    fixed = train_ensemble(TeacherStudentConfig(n_data=200), **kw)
    d = replica_draws(cfg, 7, 1)
    ref = train_single(d["x"], d["w1"], d["w2_teacher"], d["w3"], 0.5 * d["z"] / math.sqrt(32),
                       lr=0.5, epochs=3, snapshot_epochs=[0, 1, 2, 3],
                       order=lambda e: epoch_permutation(200, 7, 1, e))
    np.testing.assert_allclose(res.w2[0, 0, 1], ref["w2"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(tor.w2, res.w2, rtol=0, atol=1e-12)
    assert np.abs(fixed.w2[..., -1, :, :] - res.w2[..., -1, :, :]).max() > 1e-4


# ------------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------------


def _autograd_per_sample(x, y, w1, w2, w3, activation):
    act = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z}[activation]
    grads = []
    for a in range(x.shape[0]):
        w = torch.tensor(w2, requires_grad=True)
        yhat = torch.tensor(w3) @ act(w @ act(torch.tensor(w1) @ torch.tensor(x[a])))
        loss = 0.5 * torch.sum((torch.tensor(y[a]) - yhat) ** 2)
        loss.backward()
        grads.append(w.grad.numpy())
    return np.stack(grads)


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
def test_per_sample_gradients_equal_autograd(activation):
    x, w1, w2t, w3, w2 = external_model(3, 12, sigma_w=1.0)
    y = x @ w1.T @ w2t.T @ w3.T * 0.7  # any targets
    got, loss = per_sample_gradients(x, y, w1, w2, w3, activation)
    ref = _autograd_per_sample(x, y, w1, w2, w3, activation)
    assert got.shape == (12, 16, 32) and loss.shape == (12,)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    tgot, _ = per_sample_gradients(*(torch.tensor(a) for a in (x, y, w1, w2, w3)),
                                   activation=activation)
    np.testing.assert_allclose(tgot.numpy(), ref, rtol=1e-12, atol=1e-14)


def test_activation_registry_forms_agree_and_unknown_names_are_listed():
    from dysonsgd.model import activations, network

    z = np.linspace(-3.0, 3.0, 12)  # no point at relu's kink
    for name in activations.ACTIVATIONS:
        act = activations.lookup(name)
        phi, dphi = act.pair(z)
        tphi, tdphi = act.pair(torch.tensor(z))
        np.testing.assert_allclose(act.value(z), phi, rtol=0, atol=1e-15)
        np.testing.assert_allclose(tphi.numpy(), phi, rtol=1e-15, atol=1e-15)
        np.testing.assert_allclose(tdphi.numpy(), dphi, rtol=1e-15, atol=1e-15)
        np.testing.assert_allclose(act.inplace(torch.tensor(z)).numpy(), phi, rtol=1e-15,
                                   atol=1e-15)
        slope = (act.value(z + 1e-6) - act.value(z - 1e-6)) / 2e-6
        np.testing.assert_allclose(dphi, slope, rtol=1e-6, atol=1e-9)
    x, w1, w2t, w3, _ = external_model(6, 10)
    np.testing.assert_allclose(network.outputs(x, w1, w2t, w3, engine="torch"),
                               network.outputs(x, w1, w2t, w3), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(network.layer1_features(x[None], w1[None], engine="torch")[0],
                               network.layer1_features(x, w1), rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match=r"activation must be one of .*'tanh', 'relu'"):
        activations.lookup("sigmoid")
    with pytest.raises(ValueError, match="engine"):
        network.outputs(x, w1, w2t, w3, engine="jax")


@pytest.mark.parametrize("backend", ["numba", "torch"])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_recorded_gradients_equal_autograd(backend, activation):
    """Snapshot 0 is the full-data gradient; with n_data = batch one epoch is one SGD step."""
    x, w1, w2t, w3, w2_init = external_model(4, 4, sigma_w=1.0)
    y = np.tanh(np.tanh(x @ w1.T) @ w2t.T) @ w3.T if activation == "tanh" else (
        np.maximum(np.maximum(x @ w1.T, 0) @ w2t.T, 0) @ w3.T)
    cfg = TeacherStudentConfig(activation=activation, n_data=4, batch_size=4)
    res = train_ensemble(cfg, temperature=0.25, sigma_w=1.0, epochs=1, snapshots=2, dtype=F64,
                         progress=False, teacher_weights=(w1, w2t, w3), inputs=x,
                         student_init=w2_init, backend=backend)
    mean_grad = _autograd_per_sample(x, y, w1, w2_init, w3, activation).mean(0)
    np.testing.assert_allclose(res.grad[0, 0, 0, 0], mean_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.grad[0, 0, 0, 1], mean_grad, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(res.w2[0, 0, 0, 1], w2_init - 0.25 * 4 * mean_grad, atol=1e-14)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_student_at_teacher_has_zero_loss_and_gradient(backend):
    cfg = TeacherStudentConfig(n_data=400)
    d = replica_draws(cfg, 9, 0)
    res = train_ensemble(cfg, temperature=2.0**-5, sigma_w=1.0, epochs=2, snapshots=3, seed=9,
                         dtype=F64, progress=False, student_init=d["w2_teacher"],
                         backend=backend)
    assert np.all(res.loss < 1e-28)
    assert np.abs(res.grad).max() < 1e-14
    np.testing.assert_allclose(res.w2[0, 0, 0, -1], d["w2_teacher"], rtol=0, atol=1e-14)


# ------------------------------------------------------------------------------------------------
# seeding and batching invariance
# ------------------------------------------------------------------------------------------------


def test_model_alone_equals_model_inside_144_cell_grid():
    cfg = TeacherStudentConfig(n_data=80)
    temps = 2.0 ** np.arange(-5, 7)
    sigmas = 2.0 ** np.arange(-3, 9)
    grid = train_ensemble(cfg, temperature=temps, sigma_w=sigmas, n_seeds=1, epochs=3,
                          snapshots=4, seed=21, progress=False)
    assert grid.w2.shape == (12, 12, 1, 4, 16, 32)
    for i, j in [(0, 0), (4, 7), (11, 11), (7, 2)]:
        alone = train_ensemble(cfg, temperature=temps[i], sigma_w=sigmas[j], n_seeds=1,
                               epochs=3, snapshots=4, seed=21, progress=False)
        np.testing.assert_array_equal(alone.w2[0, 0], grid.w2[i, j])
        np.testing.assert_array_equal(alone.grad[0, 0], grid.grad[i, j])
        np.testing.assert_array_equal(alone.loss[0, 0], grid.loss[i, j])


def test_seed_index_and_replica_offset_reproduce_one_run():
    cfg = TeacherStudentConfig(n_data=100)
    big = train_ensemble(cfg, temperature=[0.1, 1.0], sigma_w=0.5, n_seeds=3, epochs=2,
                         seed=4, progress=False)
    part = train_ensemble(cfg, temperature=1.0, sigma_w=0.5, n_seeds=1, epochs=2, seed=4,
                          replica_offset=2, progress=False)
    np.testing.assert_array_equal(part.w2[0, 0, 0], big.w2[1, 0, 2])
    assert list(big.spawn_keys) == [0, 1, 2] and list(part.spawn_keys) == [2]
    # the draws are replayable from (seed, spawn key) alone
    d = replica_draws(cfg, 4, 2)
    np.testing.assert_array_equal(big.teacher_w2[2], d["w2_teacher"])
    np.testing.assert_allclose(big.w2[1, 0, 2, 0], 0.5 * d["z"] / math.sqrt(32), rtol=1e-6)
    # common random numbers: both temperatures start from the same W2(0) and teacher
    np.testing.assert_array_equal(big.w2[0, 0, :, 0], big.w2[1, 0, :, 0])
    other = train_ensemble(cfg, temperature=1.0, sigma_w=0.5, n_seeds=1, epochs=2, seed=5,
                           progress=False)
    assert np.abs(other.w2[0, 0, 0] - big.w2[1, 0, 0]).max() > 1e-3


def test_teacher_draws_have_the_papers_variances():
    cfg = TeacherStudentConfig(n_data=8)
    w1 = np.stack([replica_draws(cfg, 0, r)["w1"] for r in range(200)])
    w3 = np.stack([replica_draws(cfg, 0, r)["w3"] for r in range(200)])
    assert abs(w1.var() * 3 - 1) < 0.06 and abs(w3.var() * 16 - 1) < 0.06


# ------------------------------------------------------------------------------------------------
# divergence
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_divergence_is_recorded_and_contained(dtype, backend):
    cfg = TeacherStudentConfig(activation="identity", n_data=200)
    temps = [2.0**-6, 2.0**4]
    res = train_ensemble(cfg, temperature=temps, sigma_w=[0.125, 1.0], n_seeds=3, epochs=4,
                         snapshots=5, seed=2, dtype=dtype, progress=False, backend=backend)
    assert res.diverged[1].all() and not res.diverged[0].any()
    assert np.all(res.diverged_epoch[0] == -1) and np.all(res.diverged_step[0] == -1)
    assert np.all(np.isfinite(res.w2)) and np.all(np.isfinite(res.grad))
    assert np.all(np.isfinite(res.loss[0]))
    for s in range(2):
        for r in range(3):
            e = res.diverged_epoch[1, s, r]
            later = res.snapshot_epochs >= e + 1
            later[0] = False
            assert later.any()
            frozen = res.w2[1, s, r, later]
            assert np.all(frozen == frozen[0]) and np.all(np.isnan(res.loss[1, s, r, later]))
            assert np.all(res.grad[1, s, r, later] == res.grad[1, s, r, later][0])
    if dtype == F64:
        d = replica_draws(cfg, 2, 1)
        ref = train_single(d["x"], d["w1"], d["w2_teacher"], d["w3"],
                           1.0 * d["z"] / math.sqrt(32), lr=2.0**4 * 4, epochs=4,
                           activation="identity", snapshot_epochs=res.snapshot_epochs)
        assert (ref["diverged_epoch"], ref["diverged_step"]) == (
            res.diverged_epoch[1, 1, 1], res.diverged_step[1, 1, 1])
        np.testing.assert_allclose(res.w2[1, 1, 1], ref["w2"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.grad[1, 1, 1], ref["grad"], rtol=1e-10, atol=1e-12)
    # the release's placeholder for the loss after a divergence
    released = obs.release_training_loss(res)
    assert np.isnan(res.loss[1, :, :, -1]).all() and np.all(released[1, :, :, -1] == 100.0)
    np.testing.assert_array_equal(released[0], res.loss[0])


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": [0.1, -1.0]}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"sigma_w": 0.0}, "sigma_w"),
        ({"sigma_w": [float("nan")]}, "sigma_w"),
        ({"n_seeds": 0}, "n_seeds"),
        ({"epochs": 0}, "epochs"),
        ({"snapshots": 1}, "snapshots"),
        ({"snapshots": [1, 2]}, "snapshots"),
        ({"device": "tpu"}, "device"),
        ({"device": "banana"}, "device"),
        ({"dtype": torch.float16}, "dtype"),
        ({"backend": "jax"}, "backend"),
        ({"seed": -1}, "seed"),
        ({"student_init": np.zeros((3, 3))}, "student_init"),
        ({"inputs": np.full((4000, 3), np.nan)}, "inputs"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        train_ensemble(TeacherStudentConfig(), progress=False, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_gpu_is_a_value_error():
    with pytest.raises(ValueError, match="device"):
        train_ensemble(TeacherStudentConfig(), device="cuda", progress=False)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"activation": "sigmoid"}, "activation"),
        ({"batch_size": 3}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_data": 0}, "n_data"),
        ({"widths": (3, 32)}, "widths"),
        ({"widths": (3, 0, 16, 1)}, "widths"),
        ({"trained_layers": (1, 4)}, "trained_layers"),
        ({"data_order": "random"}, "data_order"),
        ({"divergence_threshold": 0.0}, "divergence_threshold"),
        ({"divergence_threshold": float("nan")}, "divergence_threshold"),
    ],
)
def test_bad_config_raises_value_error_naming_the_field(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TeacherStudentConfig(**kwargs)


# ------------------------------------------------------------------------------------------------
# snapshots, result object
# ------------------------------------------------------------------------------------------------


def test_snapshot_schedules():
    assert list(snapshot_epochs(40, 21)) == list(range(0, 41, 2))
    assert list(snapshot_epochs(3, 21)) == [0, 1, 2, 3]
    rel = release_snapshot_epochs(100)
    assert len(rel) == 21 and list(rel[:4]) == [0, 1, 6, 11] and rel[-1] == 96
    assert list(release_snapshot_epochs(100000)[-2:]) == [90001, 95001]


def test_result_to_xarray_and_netcdf_roundtrip(tmp_path):
    cfg = TeacherStudentConfig(n_data=40)
    res = train_ensemble(cfg, temperature=[0.1, 0.2, 0.4], sigma_w=[0.5, 1.0], n_seeds=2,
                         epochs=4, snapshots=3, seed=1, progress=False)
    ds = res.to_xarray()
    assert dict(ds["w2"].sizes) == {"temperature": 3, "sigma_w": 2, "seed": 2, "snapshot": 3,
                                    "row": 16, "col": 32}
    assert list(ds["epoch"].values) == [0, 2, 4]
    np.testing.assert_allclose(ds["learning_rate"].values, [0.4, 0.8, 1.6])
    np.testing.assert_allclose(ds["inv_sigma_w"].values, [2.0, 1.0])
    np.testing.assert_array_equal(ds["w2"].sel(temperature=0.2, sigma_w=1.0, seed=1).values,
                                  res.w2[1, 1, 1])
    path = tmp_path / "r.nc"
    ds.to_netcdf(path, engine="scipy")
    import xarray as xr

    back = EnsembleResult.from_xarray(xr.load_dataset(path, engine="scipy"))
    np.testing.assert_array_equal(back.w2, res.w2)
    np.testing.assert_array_equal(back.loss, res.loss)
    assert back.config == cfg and back.seed == 1 and back.model_steps == res.model_steps


# ------------------------------------------------------------------------------------------------
# phase-diagram sanity (section 3, figures 2-6) on small ensembles
# ------------------------------------------------------------------------------------------------


def _run_cell(sigma_w, temperature, epochs=30, n_seeds=8):
    res = train_ensemble(None, temperature=temperature, sigma_w=sigma_w, n_seeds=n_seeds,
                         epochs=epochs, snapshots=4, seed=1, progress=False)
    spacing = spectrum.mean_level_spacing(obs.result_eigenvalues(res))[0, 0]
    return res, spacing


def test_phase_sanity_ordered_hot_and_jammed():
    ordered, _ = _run_cell(1 / 8, 2.0**-5)
    hot, s_hot = _run_cell(1 / 8, 4.0)
    jammed, s_jam = _run_cell(2.0**8, 2.0**-5)
    loss_o = ordered.loss[0, 0].mean(0)
    # ordered: the training loss falls by over 100x and ends far below the hot phase
    assert loss_o[-1] < loss_o[0] / 100
    assert loss_o[-1] < hot.loss[0, 0, :, -1].mean() / 30
    assert obs.result_test_loss(ordered).mean() < obs.result_test_loss(hot).mean() / 30
    # hot: the level spacing of X grows by orders of magnitude
    assert np.median(s_hot[:, -1] / s_hot[:, 0]) > 1e3
    # jammed: it barely moves
    assert np.all(np.abs(s_jam[:, -1] / s_jam[:, 0] - 1) < 0.05)
    assert not (ordered.diverged.any() or hot.diverged.any() or jammed.diverged.any())


@pytest.mark.slow
def test_phase_sanity_longer_runs_reach_the_papers_ordered_loss():
    ordered, _ = _run_cell(1 / 8, 2.0**-5, epochs=1000, n_seeds=16)
    assert ordered.loss[0, 0, :, -1].mean() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cfg = TeacherStudentConfig(n_data=200)
    kw = dict(temperature=[0.1, 1.0], sigma_w=[0.5, 2.0], n_seeds=4, epochs=3, seed=3,
              dtype=F64, progress=False)
    cpu = train_ensemble(cfg, **kw)
    gpu = train_ensemble(cfg, device="cuda", **kw)
    assert gpu.backend == "torch"
    np.testing.assert_allclose(gpu.w2, cpu.w2, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("backend", "batch"),
    [("numba", 4), ("torch", 4), pytest.param("numba", 2, marks=pytest.mark.slow),
     pytest.param("numba", 1, marks=pytest.mark.slow)],
)
def test_other_widths_batch_size_and_several_outputs_match_numpy_loop(backend, batch):
    # odd n2 (the kernel's trailing row), n3 = 2 outputs (general output layer); other batch
    # sizes compile other kernels (slow)
    widths = (3, 8, 5, 2)
    x, w1, w2t, w3, w2_init = external_model(5, 60, widths=widths)
    cfg = TeacherStudentConfig(widths=widths, n_data=60, batch_size=batch)
    res = train_ensemble(cfg, temperature=2.0**-3, sigma_w=0.5, epochs=4, snapshots=3, seed=0,
                         dtype=F64, progress=False, teacher_weights=(w1, w2t, w3), inputs=x,
                         student_init=w2_init, backend=backend)
    ref = train_single(x, w1, w2t, w3, w2_init, lr=2.0**-3 * batch, epochs=4, batch_size=batch,
                       snapshot_epochs=res.snapshot_epochs)
    assert res.w2.shape == (1, 1, 1, 3, 5, 8)
    np.testing.assert_allclose(res.w2[0, 0, 0], ref["w2"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.grad[0, 0, 0], ref["grad"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.loss[0, 0, 0], ref["loss"], rtol=1e-11)


def test_per_model_teachers_and_thread_count_do_not_change_a_model():
    import numba

    cfg = TeacherStudentConfig(n_data=40)
    models = [external_model(s, 40) for s in (1, 2, 3)]
    w1, w2t, w3 = (np.stack([m[k] for m in models]) for k in (1, 2, 3))
    kw = dict(temperature=[0.05, 0.1, 0.2], sigma_w=0.5, n_seeds=1, epochs=3, seed=8,
              progress=False)
    together = train_ensemble(cfg, teacher_weights=(w1[:, None, None], w2t, w3), **kw)
    assert together.teacher_w2.shape == (3, 16, 32)
    np.testing.assert_array_equal(together.group[:, 0, 0], [0, 1, 2])
    for t in range(3):
        alone = train_ensemble(cfg, **{**kw, "temperature": kw["temperature"][t]},
                               teacher_weights=(w1[t], w2t[t], w3[t]))
        np.testing.assert_array_equal(alone.w2[0, 0, 0], together.w2[t, 0, 0])
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = train_ensemble(cfg, teacher_weights=(w1[:, None, None], w2t, w3), **kw)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(single.w2, together.w2)
