"""The general training path (any depth, any trained matrices, per-layer init): exactness against
a per-model torch autograd loop, replay of one model alone, the seed design, the paper's case
against the W2 kernels, results on disk, and bad input refused before any work.

Tolerances: float64 runs are compared with an equivalence margin of 1e-10 (absolute, on O(1)
weights) after 2,000 SGD steps, the margin the issue declares: every operation rounds at 1e-16
relative, the two implementations order their sums differently, and at the low temperatures
used here the dynamics does not amplify rounding by more than 1e4 over the run. Comparisons
that must hold bit for bit (a model alone or inside a grid) use exact equality.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dysonsgd._checks import InputError
from dysonsgd.model import layers
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.runs.config import ConfigError, parse_config
from dysonsgd.runs.files import load_result, save_result
from dysonsgd.train import train_ensemble
from dysonsgd.train.general import train_general

F64 = torch.float64
ACTS = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda z: z,
        "gelu": torch.nn.functional.gelu}


def stream_draws(widths, n_data: int, seed: int, replica: int):
    """The replica's stream as the docs describe it, drawn here without the package: teacher
    W_1..W_L ~ N(0, 1/n_{l-1}), inputs x ~ N(0, 1), then Z_2 and the Z_l of the other
    matrices in layer order."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(replica,))))
    n = len(widths) - 1
    teacher = [rng.standard_normal((widths[k], widths[k - 1])) / math.sqrt(widths[k - 1])
               for k in range(1, n + 1)]
    x = rng.standard_normal((n_data, widths[0]))
    z = {k: rng.standard_normal((widths[k], widths[k - 1]))
         for k in [2] + [k for k in range(1, n + 1) if k != 2]}
    return teacher, x, z


def autograd_loop(x, teacher, start, trained, activation: str, temperature: float, batch: int,
                  epochs: int, threshold: float = 100.0) -> dict:
    """Plain SGD (2.28) on the per-sample loss (2.6) with torch autograd, float64, one model:
    W_l <- W_l - T sum_b dl_b/dW_l for the trained l. Returns the final weights, the full-data
    gradients at the start, the last epoch's mean minibatch gradients and losses per epoch (or
    the divergence: epoch, step and the diverging batch's mean gradients)."""
    act = ACTS[activation]

    def net(ws, xs):
        h = xs
        for k, w in enumerate(ws):
            h = h @ w.T
            if k < len(ws) - 1:
                h = act(h)
        return h

    with torch.no_grad():
        y = net([torch.tensor(t) for t in teacher], torch.tensor(x))
    ws = [torch.tensor(w, requires_grad=True) for w in start]
    xt = torch.tensor(x)
    loss0 = 0.5 * ((net(ws, xt) - y) ** 2).sum() / len(x)
    grad0 = [g.numpy().copy() for g in torch.autograd.grad(loss0, ws)]
    out = {"grad0": grad0, "loss0": float(loss0.detach()), "losses": [], "divergence": None}
    steps = len(x) // batch
    for e in range(epochs):
        gsum = [np.zeros_like(s) for s in start]
        lsum = 0.0
        for s in range(steps):
            sl = slice(s * batch, (s + 1) * batch)
            loss = 0.5 * ((net(ws, xt[sl]) - y[sl]) ** 2).sum()
            grads = torch.autograd.grad(loss, ws)
            lossb = float(loss.detach()) / batch
            if not lossb <= threshold:
                out["divergence"] = (e, s, [g.numpy() / batch for g in grads])
                break
            with torch.no_grad():
                for k, (w, g) in enumerate(zip(ws, grads, strict=True)):
                    gsum[k] += g.numpy()
                    if k + 1 in trained:
                        w -= temperature * g
            lsum += lossb
        if out["divergence"] is not None:
            break
        out["losses"].append(lsum / steps)
        out["grad_last"] = [g / (batch * steps) for g in gsum]
    out["weights"] = [w.detach().numpy() for w in ws]
    return out


CASES = [  # widths, activation, trained layers, init per matrix
    ((3, 16, 8, 1), "tanh", "all", None),
    ((3, 16, 8, 2), "relu", (1, 3), ("teacher", "grid", 0.7)),
    ((3, 12, 8, 6, 1), "tanh", (1, 2, 4), ("grid", "grid", "teacher", "teacher")),
    ((3, 12, 8, 6, 1), "relu", "all", None),
    # the other activations of the registry: slow only for their kernels' first compilation
    pytest.param((3, 8, 6, 1), "gelu", "all", None, marks=pytest.mark.slow),
    pytest.param((3, 8, 6, 2), "identity", (1, 3), (1.5, "grid", "teacher"),
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("widths", "activation", "trained", "inits"), CASES,
                         ids=[f"{c[1]}-depth{len(c[0]) - 2}-{c[2]}"
                              for c in (getattr(c, "values", c) for c in CASES)])
def test_float64_matches_autograd_loop_after_2000_steps(widths, activation, trained, inits):
    cfg = TeacherStudentConfig(widths=widths, activation=activation, trained_layers=trained,
                               sigma_w_layers=inits, n_data=400, batch_size=4)
    temps, sigmas, seed = [2.0**-5, 2.0**-4], [0.5, 1.0], 3
    res = train_ensemble(cfg, temperature=temps, sigma_w=sigmas, n_seeds=2, epochs=20,
                         snapshots=[0, 19, 20], seed=seed, dtype=F64, progress=False)
    assert res.model_steps == 8 * 2000 and not res.diverged.any()
    assert sorted({2, *res.layer_w}) == list(cfg.recorded_layers)
    for t, s, r in [(0, 0, 0), (1, 1, 1)]:
        teacher, x, z = stream_draws(widths, 400, seed, r)
        start = []
        for k in range(1, cfg.n_layers + 1):
            rule = cfg.init_rule(k)
            scale = sigmas[s] if rule == "grid" else rule
            start.append(teacher[k - 1] if rule == "teacher"
                         else scale * z[k] / math.sqrt(widths[k - 1]))
        ref = autograd_loop(x, teacher, start, cfg.trained_layers, activation, temps[t], 4, 20)
        for k in cfg.recorded_layers:
            w, g = res.snapshots(k)
            np.testing.assert_array_equal(w[t, s, r, 0], start[k - 1])
            np.testing.assert_allclose(g[t, s, r, 0], ref["grad0"][k - 1], rtol=0, atol=1e-12)
            np.testing.assert_allclose(w[t, s, r, -1], ref["weights"][k - 1], rtol=0, atol=1e-10)
            np.testing.assert_allclose(g[t, s, r, -1], ref["grad_last"][k - 1], rtol=0,
                                       atol=1e-10)
        for k in cfg.trained_layers:  # every trained matrix moved, by far more than the margin
            assert np.abs(ref["weights"][k - 1] - start[k - 1]).max() > 1e-3
        np.testing.assert_allclose(res.loss[t, s, r], [ref["loss0"], *ref["losses"][-2:]],
                                   rtol=1e-10, atol=1e-14)
        student = res.student(-1)
        for k in range(1, cfg.n_layers + 1):
            np.testing.assert_allclose(student[k - 1][t, s, r], ref["weights"][k - 1], rtol=0,
                                       atol=1e-10)


def test_given_teacher_and_inputs_and_a_divergence_match_the_autograd_loop():
    rng = np.random.default_rng(4)  # drawn outside the package
    widths = (3, 10, 6, 1)
    teacher = [rng.normal(0, 1 / math.sqrt(widths[k - 1]), (widths[k], widths[k - 1]))
               for k in (1, 2, 3)]
    x = rng.normal(0, 1, (80, 3))
    cfg = TeacherStudentConfig(widths=widths, trained_layers=(2, 3), n_data=80,
                               divergence_threshold=3.0)
    res = train_ensemble(cfg, temperature=[2.0**-4, 4.0], sigma_w=8.0, epochs=6, snapshots=4,
                         dtype=F64, progress=False, teacher_weights=teacher, inputs=x)
    assert list(res.diverged[:, 0, 0]) == [False, True]
    w2_0 = res.w2[0, 0, 0, 0]
    for t, temp in enumerate([2.0**-4, 4.0]):
        ref = autograd_loop(x, teacher, [teacher[0], w2_0, teacher[2]], (2, 3), "tanh", temp,
                            4, 6, threshold=3.0)
        for k in (2, 3):
            w, g = res.snapshots(k)
            np.testing.assert_allclose(w[t, 0, 0, -1], ref["weights"][k - 1], rtol=0,
                                       atol=1e-10)
        if ref["divergence"] is None:
            assert not res.diverged[t, 0, 0]
            continue
        e, s, end = ref["divergence"]
        assert (res.diverged_epoch[t, 0, 0], res.diverged_step[t, 0, 0]) == (e, s)
        later = res.snapshot_epochs >= e + 1
        later[0] = False
        assert later.any() and np.isnan(res.loss[t, 0, 0, later]).all()
        for k in (2, 3):  # later snapshots: the frozen weights and the diverging batch's gradient
            w, g = res.snapshots(k)
            np.testing.assert_allclose(g[t, 0, 0, later], np.broadcast_to(
                end[k - 1], g[t, 0, 0, later].shape), rtol=0, atol=1e-10)


def test_general_kernel_on_the_papers_case_matches_the_w2_kernel():
    # two independent implementations of the same SGD: the W2 kernel (precomputed layer-1
    # features) and the general kernel (the full forward pass every step)
    cfg = TeacherStudentConfig(n_data=400)
    kw = dict(n_seeds=2, epochs=5, seed=1, replica_offset=0, dtype="float64", progress=False,
              orders=None)
    temps, sigmas = np.array([2.0**-5, 2.0**-3]), np.array([0.25, 2.0])
    paper = train_ensemble(cfg, temperature=temps, sigma_w=sigmas, n_seeds=2, epochs=5,
                           snapshots=6, seed=1, dtype=F64, progress=False)
    general = train_general(cfg, temps, sigmas, snaps=paper.snapshot_epochs, **kw)
    assert general.layer_w == {}
    np.testing.assert_allclose(general.w2, paper.w2, rtol=0, atol=1e-10)
    np.testing.assert_allclose(general.grad, paper.grad, rtol=0, atol=1e-10)
    np.testing.assert_allclose(general.loss, paper.loss, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("data_order", ["fixed", "shuffled"])
def test_a_model_alone_equals_the_model_inside_a_grid(data_order):
    # float32: 16 lanes per block; 27 models fill two blocks and a part; the model (2, 1, 2)
    # trained alone sits in lane 0 of a block padded with copies of itself
    cfg = TeacherStudentConfig(widths=(3, 12, 8, 4, 1), trained_layers="all", n_data=64,
                               data_order=data_order, sigma_w_layers=("grid", "grid", 0.5,
                                                                      "teacher"))
    temps, sigmas = [2.0**-5, 2.0**-3, 2.0**-1], [0.25, 1.0, 4.0]
    kw = dict(epochs=3, snapshots=4, seed=9, progress=False, dtype=torch.float32)
    grid = train_ensemble(cfg, temperature=temps, sigma_w=sigmas, n_seeds=3, **kw)
    alone = train_ensemble(cfg, temperature=temps[2], sigma_w=sigmas[1], n_seeds=1,
                           replica_offset=2, **kw)
    for k in cfg.recorded_layers:
        for a, b in zip(grid.snapshots(k), alone.snapshots(k), strict=True):
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a[2, 1, 2], b[0, 0, 0])
    np.testing.assert_array_equal(grid.loss[2, 1, 2], alone.loss[0, 0, 0])
    # and the replay contract: the stream gives the model's start
    d = layers.replica_layer_draws(cfg, 9, 2)
    for k in range(1, 5):
        w0 = layers.student_init(cfg, d, sigmas[1], k).astype(np.float32)
        np.testing.assert_array_equal(alone.student(0)[k - 1][0, 0, 0], w0)


def test_float32_follows_float64():
    # equivalence margin declared for the float32 kernel (rational tanh, accurate to 4e-7,
    # float32 rounding 6e-8): within 1e-4 of the weights' scale after 300 steps at T = 2^-5
    cfg = TeacherStudentConfig(trained_layers="all", n_data=400)
    kw = dict(temperature=2.0**-5, sigma_w=[0.5, 2.0], n_seeds=2, epochs=3, snapshots=2,
              progress=False)
    r32 = train_ensemble(cfg, dtype=torch.float32, **kw)
    r64 = train_ensemble(cfg, dtype=F64, **kw)
    for k in (1, 2, 3):
        (w32, _), (w64, _) = r32.snapshots(k), r64.snapshots(k)
        assert np.abs(w32[..., -1, :, :] - w64[..., -1, :, :]).max() < 1e-4 * np.abs(w64).max()
    np.testing.assert_allclose(r32.loss, r64.loss, rtol=1e-3)


def test_results_round_trip_through_a_run_file(tmp_path):
    cfg = TeacherStudentConfig(widths=(3, 6, 4, 3, 2), activation="relu", trained_layers=(1, 4),
                               n_data=16)
    res = train_ensemble(cfg, temperature=[0.01, 0.1], sigma_w=1.0, n_seeds=2, epochs=2,
                         dtype=F64, progress=False)
    back = load_result(save_result(res, tmp_path / "run.nc"))
    assert back.config == cfg and sorted(back.layer_w) == [1, 4]
    assert sorted(back.teacher_layers) == [4]
    for k in (1, 2, 4):
        for a, b in zip(res.snapshots(k), back.snapshots(k), strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(res.teacher_matrices(), back.teacher_matrices(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="layer"):
        res.snapshots(3)  # W3 is the teacher's throughout


# ------------------------------------------------------------------------------------------------
# bad input: refused with the parameter named, before any work
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"trained_layers": (4,)}, "trained_layers"),
    ({"trained_layers": (0, 1)}, "trained_layers"),
    ({"trained_layers": ()}, "trained_layers"),
    ({"trained_layers": (1, 1)}, "trained_layers"),
    ({"trained_layers": "some"}, "trained_layers"),
    ({"trained_layers": (1.5,)}, "trained_layers"),
    ({"widths": (3, 8, 4, 2, 1), "trained_layers": (5,)}, "trained_layers"),
    ({"activation": "swish"}, "activation"),
    ({"widths": (3, 16)}, "widths"),
    ({"widths": (3, 16, 0, 1)}, "widths"),
    ({"sigma_w_layers": ("teacher", "grid")}, "sigma_w_layers"),
    ({"sigma_w_layers": ("teacher", "grid", "teacher", "teacher")}, "sigma_w_layers"),
    ({"sigma_w_layers": ("teacher", 1.0, "teacher")}, "sigma_w_layers"),
    ({"sigma_w_layers": ("random", "grid", "teacher")}, "sigma_w_layers"),
    ({"sigma_w_layers": (-1.0, "grid", "teacher")}, "sigma_w_layers"),
])
def test_bad_config_is_refused_naming_the_parameter(kwargs, name):
    with pytest.raises(InputError, match=name):
        TeacherStudentConfig(**kwargs)


def test_bad_training_arguments_of_the_general_path_are_refused():
    cfg = TeacherStudentConfig(trained_layers="all", n_data=8)
    with pytest.raises(InputError, match="backend"):
        train_ensemble(cfg, backend="torch", progress=False)
    with pytest.raises(InputError, match="teacher_weights"):
        train_ensemble(cfg, teacher_weights=[np.zeros((32, 3)), np.zeros((16, 32))],
                       progress=False)
    with pytest.raises(InputError, match="teacher_weights"):
        train_ensemble(cfg, teacher_weights=[np.zeros((32, 3)), np.zeros((16, 32)),
                                             np.zeros((2, 16))], progress=False)


@pytest.mark.parametrize(("training", "key"), [
    ({"trained_layers": [1, 4]}, "trained_layers"),
    ({"trained_layers": 2}, "trained_layers"),
    ({"trained_layers": []}, "trained_layers"),
    ({"widths": [3, 32]}, "widths"),
    ({"sigma_w_layers": ["teacher", "grid"]}, "sigma_w_layers"),
    ({"sigma_w_layers": "teacher"}, "sigma_w_layers"),
    ({"sigma_w_layers": ["teacher", 0.5, "teacher"]}, "sigma_w_layers"),
    ({"activation": "softplus"}, "activation"),
])
def test_bad_sweep_config_is_refused_naming_the_key(training, key):
    mapping = {"grid": {"temperature": [0.1], "inv_sigma_w": [8.0], "seeds": 2},
               "training": {"epochs": 2, **training}}
    with pytest.raises(ConfigError) as info:
        parse_config(mapping)
    assert info.value.section == "training" and info.value.key == key


def test_sweep_config_keys_round_trip_and_keep_the_papers_fingerprint():
    base = {"grid": {"temperature": [0.1], "inv_sigma_w": [8.0], "seeds": 2},
            "training": {"epochs": 2}}
    # the fingerprint of the paper's config as computed before these keys existed
    assert parse_config(base).fingerprint() == "2bad40732473c642"
    general = {"grid": base["grid"], "training": {
        "epochs": 2, "widths": [3, 8, 4, 4, 1], "trained_layers": "all",
        "sigma_w_layers": ["teacher", "grid", 0.5, "teacher"]}}
    cfg = parse_config(general)
    assert cfg.model.trained_layers == (1, 2, 3, 4)
    assert cfg.model.sigma_w_layers == ("teacher", "grid", 0.5, "teacher")
    assert parse_config(cfg.to_dict()) == cfg
    assert cfg.fingerprint() != parse_config(base).fingerprint()


def test_a_sweep_store_holds_every_recorded_matrix(tmp_path):
    from dysonsgd.runs.store import load_sweep, verify_sweep
    from dysonsgd.runs.sweep import run_sweep

    cfg = parse_config({
        "grid": {"temperature": [2.0**-5, 2.0**-2], "inv_sigma_w": [8.0, 1.0, 0.5], "seeds": 2},
        "training": {"epochs": 2, "n_data": 32, "widths": [3, 8, 4, 4, 1],
                     "activation": "relu", "trained_layers": [1, 3],
                     "sigma_w_layers": ["teacher", "grid", "teacher", 0.5],
                     "dtype": "float64"}})
    run_sweep(cfg, tmp_path / "s.zarr", pack_cells=2, durable=False)
    stored = load_sweep(tmp_path / "s.zarr")
    direct = train_ensemble(cfg.model, temperature=list(cfg.temperature),
                            sigma_w=list(cfg.sigma_w), n_seeds=2, epochs=2,
                            snapshots=cfg.snapshots, dtype=F64, progress=False)
    assert stored.config == cfg.model and sorted(stored.layer_w) == [1, 3, 4]
    for k in (1, 2, 3, 4):  # cells trained in packs of two: bitwise the whole grid's numbers
        for a, b in zip(stored.snapshots(k), direct.snapshots(k), strict=True):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(stored.teacher_matrices(), direct.teacher_matrices(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert verify_sweep(tmp_path / "s.zarr")["cells_damaged"] == 0
