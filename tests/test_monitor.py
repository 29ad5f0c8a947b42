"""dysonsgd.monitor: exactness on the paper's model, oracles for any model, robustness.

Tolerances: float64 comparisons with another code path are relative to the array's scale at
1e-10 (the issue's margin; rounding differences are ~1e-14); statistical checks state their
standard error in a comment and allow 4 SE (two-sided p ~ 6e-5) unless said otherwise.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dysonsgd._checks import InputError
from dysonsgd.analysis import phase
from dysonsgd.measure import gradstats
from dysonsgd.measure.moments import coefficients_at, spacing_coefficients_complete
from dysonsgd.measure.observables import test_inputs as release_test_inputs
from dysonsgd.model import network
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.model.draws import replica_draws
from dysonsgd.monitor import SpectrumMonitor, open_store, spectra
from dysonsgd.monitor.digits import train_digits
from dysonsgd.monitor.probe import per_sample_gradients
from dysonsgd.monitor.summary import layer_dataset
from dysonsgd.theory import rmt
from dysonsgd.theory.boundaries import signal_to_noise_threshold
from dysonsgd.train import train_ensemble


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny products: an OpenMP team only adds latency on a shared host (10x here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rel(a, b) -> float:
    """max |a - b| relative to the scale max |b| of the reference."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------------------------------
# exactness: the paper's teacher-student as an nn.Module, a plain torch loop
# ------------------------------------------------------------------------------------------


class TeacherStudent(nn.Module):
    """yhat = W3 tanh(W2 tanh(W1 x)) (2.3), inputs as rows, only W2 trained."""

    def __init__(self, w1, w2, w3) -> None:
        super().__init__()
        self.register_buffer("w1", torch.tensor(w1))
        self.w2 = nn.Parameter(torch.tensor(w2))
        self.register_buffer("w3", torch.tensor(w3))

    def forward(self, x):
        return torch.tanh(torch.tanh(x @ self.w1.T) @ self.w2.T) @ self.w3.T


def half_square(out, target):
    """The batch mean of the per-sample loss (2.6), l = 1/2 sum_i (y_i - yhat_i)^2."""
    return 0.5 * ((out - target) ** 2).sum(-1).mean()


def test_teacher_student_monitored_equals_dysonsgd_measurement():
    config = TeacherStudentConfig(widths=(3, 32, 16, 1), n_data=64, batch_size=4)
    temperature, sigma_w, seed, epochs = 2.0**-3, 1.0, 7, 3
    run = train_ensemble(config, temperature, sigma_w, epochs=epochs,
                         snapshots=list(range(epochs + 1)), dtype=torch.float64,
                         backend="torch", progress=False, seed=seed)
    w1, w2_teacher, w3 = (a[0, 0, 0] for a in run.teacher())
    model = TeacherStudent(w1, run.w2[0, 0, 0, 0], w3)
    x = replica_draws(config, seed, 0)["x"]
    y = network.outputs(x, w1, w2_teacher, w3, "tanh", engine="torch")
    x_probe = release_test_inputs(128, 3, 42)  # gradstats.measure's default data
    y_probe = network.outputs(x_probe, w1, w2_teacher, w3, "tanh", engine="torch")
    lr = temperature * config.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    xt, yt, b = torch.tensor(x), torch.tensor(y), config.batch_size
    with SpectrumMonitor(model, opt, every=config.steps_per_epoch, layers=["w2"],
                         probe=(torch.tensor(x_probe), torch.tensor(y_probe)),
                         loss_fn=half_square, batch_size=b, sigma_w=sigma_w) as mon:
        for _ in range(epochs):
            for s in range(config.steps_per_epoch):
                opt.zero_grad()
                half_square(model(xt[s * b:(s + 1) * b]), yt[s * b:(s + 1) * b]).backward()
                opt.step()
    ds = layer_dataset(mon.to_xarray(), "w2")
    assert list(mon.to_xarray()["step"].values) == [0, 16, 32, 48]
    assert np.all(ds["temperature"].values == temperature)
    for k in range(epochs + 1):
        st = gradstats.measure(run, k, x=x_probe)
        ref = {"eigenvalues": st.eigenvalues, "K": st.k, "V": st.v, "k_s": st.k_s,
               "v_s": st.v_s, "d_s": st.d_s}
        c = coefficients_at(st.moments)
        ref.update(ito=c.ito, mean_square=c.mean_square, finite_lr=c.finite_lr,
                   covariance=c.covariance)
        ref.update(zip(("k_s_complete", "v_s_complete", "d_s_complete"),
                       spacing_coefficients_complete(c, temperature, lr), strict=True))
        for name, value in ref.items():
            assert _rel(ds[name].values[k], np.asarray(value)[0, 0, 0]) < 1e-10, (k, name)
    # the (4.15) side at the end: the package's own pipeline on the run
    st = gradstats.measure(run, -1, x=x_probe)
    converged, _ = phase.signal_to_noise_convergence(run, "paper", stats=st)
    assert ds["converged"].values[-1] == float(converged[0, 0, 0])
    assert ds["threshold"].values[-1] == pytest.approx(
        signal_to_noise_threshold(temperature, sigma_w, config.widths), rel=1e-12)


# ------------------------------------------------------------------------------------------
# the digits MLP: a short run, the trajectory unchanged, initial spectra against MP
# ------------------------------------------------------------------------------------------


def test_digits_short_run_keeps_the_trajectory_and_starts_marchenko_pastur(tmp_path):
    lr = 0.1
    plain = train_digits(lr, epochs=2, monitor=False)
    watched = train_digits(lr, epochs=2, every=25, probe_size=64, store=tmp_path / "d.zarr")
    for (name, a), b in zip(plain.model.named_parameters(), watched.model.parameters(),
                            strict=True):
        assert torch.equal(a, b), name  # bitwise: attaching the monitor changes nothing
    assert np.array_equal(plain.losses, watched.losses)
    ds = watched.records
    steps = 2 * (1500 // 16)
    assert list(ds["step"].values) == [*range(0, steps, 25), steps]
    assert ds["probed"].values[-1] == 1.0
    for name, (n, m) in {"fc1.weight": (64, 64), "fc2.weight": (32, 64),
                         "fc3.weight": (10, 32)}.items():
        sub = layer_dataset(ds, name)
        assert sub.sizes["i"] == n
        assert np.all(sub["temperature"].values == pytest.approx(lr / 16, rel=1e-15))
        # torch's default init is uniform with variance 1/(3 fan_in) = sigma^2/M, sigma^2 = 1/3;
        # the mean eigenvalue has relative SE sqrt(var(w^2)/E[w^2]^2 / (N M)) = sqrt(0.8/(N M))
        se = math.sqrt(0.8 / (n * m)) / 3
        assert sub["n_spikes"].values[0] == 0  # a false spike: probability 0.01 (spectra)
        assert abs(sub["mp_sigma2"].values[0] - 1 / 3) < 4 * se, name
        assert np.all(np.isfinite(sub["K"].values[ds["probed"].values == 1.0]))
    assert watched.test_accuracy > 0.8  # it did learn


def test_store_holds_what_memory_holds(tmp_path):
    import xarray as xr

    runs = []
    for store in (None, tmp_path / "m.zarr"):
        model = _mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(12, 5), torch.randn(12, 3)
        with SpectrumMonitor(model, opt, every=2, probe_every=4, probe=(x, y),
                             loss_fn=nn.MSELoss(), store=store, batch_size=4) as mon:
            for s in range(9):
                opt.zero_grad()
                nn.functional.mse_loss(model(x[s % 3 * 4:s % 3 * 4 + 4]),
                                       y[s % 3 * 4:s % 3 * 4 + 4]).backward()
                opt.step()
        runs.append(mon.to_xarray())
    xr.testing.assert_identical(runs[0].drop_attrs(), runs[1].drop_attrs())
    assert list(runs[1]["probed"].values) == [1, 0, 1, 0, 1, 1]  # steps 0 2 4 6 8 9


# ------------------------------------------------------------------------------------------
# per-sample gradients (torch.func) against a loop of single backward passes
# ------------------------------------------------------------------------------------------


class SmallConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.wide = nn.Conv2d(4, 16, 1)
        self.norm = nn.BatchNorm2d(16)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(16 * 16, 3)

    def forward(self, x):
        h = self.drop(torch.relu(self.norm(self.wide(torch.tanh(self.conv(x))))))
        return self.fc(h.flatten(1))


def test_per_sample_gradients_match_a_loop_and_leave_the_model_alone():
    torch.manual_seed(3)
    model = SmallConvNet().double()
    x = torch.randn(10, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    loss_fn = nn.CrossEntropyLoss()
    model(x)  # batch norm sees one training batch: running statistics are not the defaults
    names = ["conv.weight", "wide.weight", "fc.weight"]
    running = model.norm.running_mean.clone()
    rng = torch.get_rng_state()
    grads, losses = per_sample_gradients(model, names, x, y, loss_fn)
    assert model.training and model.drop.training  # flags restored
    assert torch.equal(model.norm.running_mean, running)
    assert torch.equal(torch.get_rng_state(), rng)
    model.eval()  # the oracle: one backward pass per point, in eval mode
    params = dict(model.named_parameters())
    for a in range(10):
        loss = loss_fn(model(x[a:a + 1]), y[a:a + 1])
        ref = torch.autograd.grad(loss, [params[n] for n in names])
        assert float(losses[a]) == pytest.approx(loss.item(), rel=1e-13)
        for n, g in zip(names, ref, strict=True):
            assert _rel(grads[n][a], g) < 1e-12, (a, n)


def _eigenvalues(w):
    return np.sort(np.linalg.svd(w, compute_uv=False) ** 2)


def test_conv_weights_reshaped_and_tall_matrices_transposed_with_k_v_by_perturbation():
    """Eigenvalues from an SVD of the reshaped parameter; K_ii and V_ii (4.4) as the first
    derivative of the eigenvalues of X along -mean(Delta) and the variance of the derivative
    along Delta_a, by central differences (truncation eps^2 ~ 1e-12 of the scale; 1e-6 allowed)."""
    torch.manual_seed(4)
    model = SmallConvNet().double()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(12, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    loss_fn = nn.CrossEntropyLoss()
    mon = SpectrumMonitor(model, opt, layers=["conv", "wide.weight", "fc"], probe=(x, y),
                          loss_fn=loss_fn, batch_size=12)
    ds = mon.to_xarray()
    info = {la.name: la for la in mon.layers}
    assert (info["conv.weight"].n_rows, info["conv.weight"].n_cols) == (4, 9)
    assert info["wide.weight"].transposed and info["wide.weight"].n_rows == 4
    assert info["fc.weight"].n_rows == 3 and not info["fc.weight"].transposed
    grads, _ = per_sample_gradients(model, list(info), x, y, loss_fn)
    eps = 1e-6
    for name, la in info.items():
        p = dict(model.named_parameters())[name].detach()
        w = p.reshape(p.shape[0], -1).numpy()
        sub = layer_dataset(ds, name)
        assert _rel(sub["eigenvalues"].values[0], _eigenvalues(w)) < 1e-12
        g = grads[name].reshape(12, p.shape[0], -1).numpy()

        def deriv(d, w=w):
            return (_eigenvalues(w + eps * d) - _eigenvalues(w - eps * d)) / (2 * eps)

        k_ii = deriv(-g.mean(axis=0))
        v_ii = np.var([deriv(g[a]) for a in range(12)], axis=0)
        n = la.n_rows
        assert _rel(np.diagonal(sub["K"].values[0]), k_ii[-n:]) < 1e-6, name
        assert _rel(np.diagonal(sub["V"].values[0]), v_ii[-n:]) < 1e-6, name


def test_weight_decay_shifts_k_by_minus_2_lambda_x_and_leaves_v():
    """SGD adds lambda W to every gradient: K_ii -> K_ii - 2 lambda x_i (4.4), V unchanged."""
    torch.manual_seed(5)
    x, y = torch.randn(32, 8, dtype=torch.float64), torch.randn(32, 2, dtype=torch.float64)
    runs = {}
    for wd in (0.0, 0.3):
        torch.manual_seed(5)
        model = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 2)).double()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=wd)
        runs[wd] = SpectrumMonitor(model, opt, probe=(x, y), loss_fn=nn.MSELoss(),
                                   batch_size=8).to_xarray()
    for name in ("0.weight", "2.weight"):
        a, b = layer_dataset(runs[0.0], name), layer_dataset(runs[0.3], name)
        xs = a["eigenvalues"].values[0]
        shifted = np.diagonal(a["K"].values[0]) - 2 * 0.3 * xs
        assert _rel(np.diagonal(b["K"].values[0]), shifted) < 1e-12
        assert _rel(b["V"].values[0], a["V"].values[0]) < 1e-12


# ------------------------------------------------------------------------------------------
# temperature with momentum: the stationary variance of a noisy quadratic
# ------------------------------------------------------------------------------------------


class Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(200, 200, dtype=torch.float64))


@pytest.mark.parametrize("momentum, dampening", [(0.0, 0.0), (0.9, 0.0), (0.5, 0.5)])
def test_momentum_temperature_gives_the_stationary_variance(momentum, dampening):
    """Loss h w^2/2 with gradient noise N(0, s^2), 40000 independent entries of W. Heavy-ball
    SGD has the exact stationary variance lr' s^2 (1 + mu) / (h (1 - mu) (2 (1 + mu) - lr' h)),
    lr' = lr (1 - d), i.e. T s^2 / (2 h) times 2 (1 + mu) / (2 (1 + mu) - lr' h) with the
    monitor's T = lr (1 - d) / ((1 - mu) |B|), |B| = 1. SE of the variance sqrt(2 / 40000)."""
    lr, h, s = 0.01, 1.0, 1.0
    model = Quadratic()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, dampening=dampening)
    mon = SpectrumMonitor(model, opt, every=10**9, layers=["w"], batch_size=1)
    gen = torch.Generator().manual_seed(11)
    for _ in range(400):  # decay time <= 1/(1 - sqrt(mu)) ~ 20 steps
        noise = s * torch.randn(200, 200, generator=gen, dtype=torch.float64)
        model.w.grad = h * model.w.detach() + noise  # the gradient of h w^2/2 + noise w
        opt.step()
    temperature = float(mon.to_xarray()["w__temperature"].values[0])
    assert temperature == pytest.approx(lr * (1 - dampening) / (1 - momentum), rel=1e-15)
    lr1 = lr * (1 - dampening)
    expected = temperature * s**2 / (2 * h) * 2 * (1 + momentum) / (2 * (1 + momentum) - lr1 * h)
    var = float(model.w.detach().var())
    assert abs(var / expected - 1) < 4 * math.sqrt(2 / 40000)
    mon.close(record_final=False)


# ------------------------------------------------------------------------------------------
# spectra: Marchenko-Pastur fit, spikes, spacing ratios
# ------------------------------------------------------------------------------------------


def test_marchenko_pastur_fit_of_pure_and_spiked_wishart_matrices():
    rng = np.random.default_rng(8)
    n, m, sigma2, draws = 64, 128, 0.5, 300
    fits = [spectra.marchenko_pastur_fit(
        _eigenvalues(rng.standard_normal((n, m)) * math.sqrt(sigma2 / m)), m)
        for _ in range(draws)]
    spikes = np.array([f.n_spikes for f in fits])
    # a spike in a pure MP matrix: TW 99% point, probability ~0.01 per draw; P(Bin(300, 0.01)
    # >= 10) = 8e-4
    assert spikes.sum() <= 9
    est = np.array([f.sigma2 for f in fits])
    assert abs(est.mean() - sigma2) < 4 * est.std(ddof=1) / math.sqrt(draws)
    assert np.median([f.ks for f in fits]) < 0.1
    # three planted spikes far above the edge (singular values 4 sqrt(x_+))
    edge = rmt.marchenko_pastur_edges(n / m, sigma2)[1]
    found = []
    for _ in range(100):
        w = rng.standard_normal((n, m)) * math.sqrt(sigma2 / m)
        u, _ = np.linalg.qr(rng.standard_normal((n, 3)))
        v, _ = np.linalg.qr(rng.standard_normal((m, 3)))
        w += 4 * math.sqrt(edge) * u @ v.T
        found.append(spectra.marchenko_pastur_fit(_eigenvalues(w), m).n_spikes)
    found = np.array(found)
    assert np.all(found >= 3)
    assert np.count_nonzero(found > 3) <= 6  # false alarms, P(Bin(100, 0.01) >= 7) = 1e-4


def test_spacing_ratio_of_wishart_and_poisson_levels():
    """<r~> over 200 independent draws: GOE statistics for Wishart (real Laguerre) matrices,
    Poisson for i.i.d. levels; the SE of the mean over draws, plus a 0.01 margin for the
    finite N = 64 (edges included) against the large-N GOE value."""
    rng = np.random.default_rng(9)
    wishart = [spectra.spectrum_statistics(_eigenvalues(rng.standard_normal((64, 128))), 128)
               .ratio_mean for _ in range(200)]
    poisson = [spectra.spectrum_statistics(np.sort(rng.random(64)), 64).ratio_mean
               for _ in range(200)]
    for values, ref, margin in ((wishart, rmt.spacing_ratio_mean("goe"), 0.01),
                                (poisson, rmt.spacing_ratio_mean("poisson"), 0.0)):
        se = np.std(values, ddof=1) / math.sqrt(len(values))
        assert abs(np.mean(values) - ref) < 4 * se + margin


def test_heavy_tail_needs_powerlaw():
    model = nn.Sequential(nn.Linear(8, 8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if not spectra.heavy_tail_available():
        with pytest.raises(InputError, match="powerlaw"):
            SpectrumMonitor(model, opt, heavy_tail=True)
        return
    ds = SpectrumMonitor(model, opt, heavy_tail=True).to_xarray()
    assert np.isfinite(ds["0.weight__alpha"].values[0])


# ------------------------------------------------------------------------------------------
# refusals before training, hooks, context manager, batch size
# ------------------------------------------------------------------------------------------


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


@pytest.mark.parametrize("case, match", [
    ("no_layers", "model has no nn.Linear"),
    ("adam", "optimizer must be torch.optim.SGD"),
    ("maximize", "optimizer: maximize"),
    ("probe_features", "probe: the model and loss_fn fail"),
    ("probe_targets", "probe: loss_fn over a batch"),
    ("probe_lengths", "probe: inputs"),
    ("no_loss_fn", "loss_fn must be given"),
    ("every", "every must be"),
    ("probe_every", "probe_every must be a multiple"),
    ("layer_name", "layers: 'nope'"),
    ("untrained", "optimizer does not train"),
    ("store", "store: .* already exists"),
])
def test_bad_input_is_refused_before_training(case, match, tmp_path):
    model = _mlp()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(6, 5), torch.randn(6, 3)
    kwargs = {"probe": (x, y), "loss_fn": nn.MSELoss()}
    if case == "no_layers":
        model = nn.Sequential(nn.Tanh())
        model.register_parameter("scale", nn.Parameter(torch.ones(3)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        kwargs = {}
    elif case == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=0.1)
    elif case == "maximize":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, maximize=True)
    elif case == "probe_features":
        kwargs["probe"] = (torch.randn(6, 7), y)
    elif case == "probe_targets":  # (6,) targets against (6, 1) outputs broadcast to (6, 6)
        model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        kwargs = {"probe": (x, torch.randn(6)), "loss_fn": nn.MSELoss()}
    elif case == "probe_lengths":
        kwargs["probe"] = (x, y[:4])
    elif case == "no_loss_fn":
        kwargs["loss_fn"] = None
    elif case == "every":
        kwargs["every"] = 0
    elif case == "probe_every":
        kwargs.update(every=10, probe_every=15)
    elif case == "layer_name":
        kwargs["layers"] = ["nope"]
    elif case == "untrained":
        opt = torch.optim.SGD(model[0].parameters(), lr=0.1)
    elif case == "store":
        (tmp_path / "s.zarr").mkdir()
        kwargs["store"] = tmp_path / "s.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own warning about broadcasting targets
        with pytest.raises(InputError, match=match):
            SpectrumMonitor(model, opt, **kwargs)
    assert not opt._optimizer_step_post_hooks  # nothing attached
    if case not in ("no_layers",):
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_context_manager_records_every_steps_then_detaches_and_infers_the_batch():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.5)
    x, y = torch.randn(40, 5), torch.randn(40, 3)
    with SpectrumMonitor(model, opt, every=3) as mon:
        for s in range(7):
            opt.zero_grad()
            nn.functional.mse_loss(model(x[s * 5:(s + 1) * 5]), y[s * 5:(s + 1) * 5]).backward()
            opt.step()
    for _ in range(4):  # detached: these steps are not recorded
        opt.step()
    ds = mon.to_xarray()
    assert list(ds["step"].values) == [0, 3, 6, 7]
    t = ds["0.weight__temperature"].values
    assert np.isnan(t[0]) and np.all(t[1:] == pytest.approx(0.2 / (1 - 0.5) / 5, rel=1e-15))
    assert ds["0.weight__time"].values[-1] == pytest.approx(7 * 0.4, rel=1e-14)


# ------------------------------------------------------------------------------------------
# a run killed with SIGKILL keeps every completed record
# ------------------------------------------------------------------------------------------

CHILD = """
import sys, torch
from torch import nn
from dysonsgd.monitor import SpectrumMonitor
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.05)
x, y = torch.randn(64, 16), torch.randn(64, 4)
mon = SpectrumMonitor(model, opt, every=1, probe=(x[:16], y[:16]), loss_fn=nn.MSELoss(),
                      store=sys.argv[1], batch_size=8)
step = 0
while True:
    opt.zero_grad()
    nn.functional.mse_loss(model(x[step % 8 * 8:step % 8 * 8 + 8]),
                           y[step % 8 * 8:step % 8 * 8 + 8]).backward()
    opt.step()
    step += 1
    print(mon.n_records, flush=True)
"""


def test_sigkill_leaves_a_readable_store_with_every_completed_record(tmp_path):
    store = tmp_path / "killed.zarr"
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    proc = subprocess.Popen([sys.executable, str(script), str(store)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    printed = 0
    deadline = time.monotonic() + 120
    while printed < 70 and time.monotonic() < deadline:  # past the first doubling (64 rows)
        line = proc.stdout.readline()
        if not line:
            break
        printed = int(line)
    time.sleep(0.0137)  # land somewhere inside a later record
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL and printed >= 70
    ds = open_store(store)
    n = ds.sizes["record"]
    assert n >= printed  # every record the child saw completed is there
    assert list(ds["step"].values) == list(range(n))
    for name in ("0.weight", "2.weight"):
        sub = layer_dataset(ds, name)
        x = sub["eigenvalues"].values
        assert np.all(np.isfinite(x)) and np.all(np.isfinite(sub["K"].values))
        # each row is whole: its S is that of its own eigenvalues
        assert np.allclose(sub["level_spacing"].values, (x[:, -1] - x[:, 0]) / (x.shape[1] - 1),
                           rtol=1e-12, atol=0)


def test_lightning_callback():
    lightning = pytest.importorskip("lightning")
    from dysonsgd.monitor.lightning import SpectrumCallback

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return nn.functional.mse_loss(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(40, 5), torch.randn(40, 3))
    callback = SpectrumCallback(every=2, batch_size=8)
    trainer = lightning.Trainer(max_epochs=1, callbacks=[callback], logger=False,
                                enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(Module(), torch.utils.data.DataLoader(data, batch_size=8))
    assert list(callback.monitor.to_xarray()["step"].values) == [0, 2, 4, 5]


# ------------------------------------------------------------------------------------------
# docs/monitor.md: its code runs as written
# ------------------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "monitor.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_docs_quick_start_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(_blocks("python")[0], scope)
    ds = open_store(tmp_path / "quickstart.zarr")
    assert list(ds["step"].values) == [*range(0, 640, 100), 640]
    assert ds["2.weight__level_spacing"].equals(scope["ds"]["2.weight__level_spacing"])


@pytest.mark.slow
def test_docs_digits_example_end_to_end(tmp_path, monkeypatch, capsys):
    from dysonsgd.cli import main

    monkeypatch.chdir(tmp_path)
    exec(_blocks("python")[1], {})
    printed = capsys.readouterr().out
    assert printed.count("test accuracy 0.97") == 3  # as docs/monitor.md says
    command = next(line for line in _blocks("bash")[0].splitlines()
                   if line.startswith("dysonsgd monitor report"))
    assert main(shlex.split(command)[1:]) == 0
    for name in ("spectrum-1", "spacing", "signal-to-noise"):
        assert (tmp_path / "figures" / f"{name}.png").exists()
        assert (tmp_path / "figures" / f"{name}.pdf").exists()
