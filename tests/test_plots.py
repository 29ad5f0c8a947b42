"""dysonsgd.plots.figures and ``dysonsgd figures``: files are valid, plotted data equal the
arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.contour import ContourSet

from dysonsgd.analysis import phase
from dysonsgd.cli import main
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.plots import figures as plots
from dysonsgd.runs.files import save_result
from dysonsgd.theory import boundaries, disorder
from dysonsgd.train import train_ensemble

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# matplotlib 3.8's mathtext calls pyparsing's old camelCase names
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated - use:DeprecationWarning",
                                        "ignore:.*argument is deprecated")


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


def _is_pdf(path) -> bool:
    data = path.read_bytes()
    return data[:5] == b"%PDF-" and b"%%EOF" in data[-32:]


def _mesh(ax) -> QuadMesh:
    return next(c for c in ax.collections if isinstance(c, QuadMesh))


def _contour_levels(ax) -> list[float]:
    return sorted(float(lv) for c in ax.collections if isinstance(c, ContourSet)
                  for lv in c.levels)


@pytest.fixture(scope="module")
def grid():
    """A 3 x 4 grid given in scrambled order, with known cell values."""
    temps = np.array([1.0, 0.25, 4.0])
    sig = np.array([0.125, 8.0, 1.0, 64.0])
    rng = np.random.default_rng(0)
    return temps, sig, rng.uniform(1e-6, 1e-2, (3, 4)), rng.uniform(0, 1, (3, 4))


def _sorted(values, temps, sig):
    return values[np.argsort(temps)][:, np.argsort(1 / sig)]


def test_save_figure_writes_valid_png_and_pdf(tmp_path):
    paths = plots.save_figure(plots.figure1(), tmp_path / "sub", "f1")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert _is_png(paths[0]) and _is_pdf(paths[1])
    with pytest.raises(ValueError, match="formats"):
        plots.save_figure(plots.figure1(), tmp_path, "f1", formats=("jpg",))


def test_figure1_plots_the_soft_spin_density():
    fig = plots.figure1(sigma_z2=(0.25, 0.5, 2.0))
    left, right = fig.axes[:2]
    assert len(left.lines) == 3
    for line, s2 in zip(left.lines, (0.25, 0.5, 2.0), strict=True):
        np.testing.assert_allclose(line.get_ydata(),
                                   disorder.soft_spin_density(line.get_xdata(), s2))
    assert left.lines[1].get_linestyle() == "--"  # sigma_c^2
    np.testing.assert_allclose(right.lines[0].get_ydata(), np.tanh(right.lines[0].get_xdata()))


def test_heatmaps_hold_the_cell_values_on_log2_axes(grid):
    temps, sig, loss, g = grid
    fig = plots.figure2(loss, temps, sig)
    mesh = _mesh(fig.axes[0])
    np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(3, 4),
                                  _sorted(loss, temps, sig))
    assert (mesh.norm.vmin, mesh.norm.vmax) == plots.LOSS_RANGE
    centres = mesh.get_coordinates()
    np.testing.assert_allclose(0.5 * (centres[0, 1:, 0] + centres[0, :-1, 0]),
                               np.sort(np.log2(1 / sig)))
    np.testing.assert_allclose(0.5 * (centres[1:, 0, 1] + centres[:-1, 0, 1]),
                               np.sort(np.log2(temps)))
    fig = plots.figure5(g, 0.1 + 0.1 * g, temps, sig)
    left, right = _mesh(fig.axes[0]), _mesh(fig.axes[1])  # then come the colour bars
    np.testing.assert_array_equal(np.asarray(left.get_array()).reshape(3, 4),
                                  _sorted(g, temps, sig))
    assert (right.norm.vmin, right.norm.vmax) == pytest.approx(plots.ALIGNMENT_RANGE)
    fig = plots.figure7(g / 10, temps, sig, epochs=100)
    assert _mesh(fig.axes[0]).norm.vmax == pytest.approx(0.2)
    with pytest.raises(ValueError, match="values must have shape"):
        plots.figure2(loss.T, temps, sig)


def test_figure3_and_4_lines(grid):
    temps, sig, loss, g = grid
    fig = plots.figure3(loss, g, temps, sig)
    ax = fig.axes[0]
    assert len(ax.lines) == 4
    lo = _sorted(loss, temps, sig)
    for j, line in enumerate(ax.lines):
        np.testing.assert_allclose(line.get_xdata(), np.sort(temps))
        np.testing.assert_allclose(line.get_ydata(), lo[:, j])
    per_model = np.arange(3 * 5, dtype=float).reshape(3, 5) + 1
    fig = plots.figure4(temps, per_model, 2 * per_model, 8.0, sig,
                        np.ones((4, 5)) * np.arange(1, 5)[:, None], 0.25)
    order = np.argsort(temps)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), per_model[order].mean(1))
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), 2 * per_model[order].mean(1))
    # right panel: along 1/sigma_W ascending
    np.testing.assert_allclose(fig.axes[2].lines[0].get_xdata(), np.sort(1 / sig))
    np.testing.assert_allclose(fig.axes[2].lines[0].get_ydata(),
                               np.arange(1, 5)[np.argsort(1 / sig)])


def test_figure6_draws_every_eigenvalue_and_the_targets():
    rng = np.random.default_rng(1)
    eig = [rng.uniform(0, 1, (2, 5, 3)), rng.uniform(0, 10, (2, 5, 3))]
    tgt = [np.full((2, 3), 0.5), None]
    fig = plots.figure6(np.arange(5) * 10, eig, tgt, ["a", "b"])
    ax0, ax1 = fig.axes
    solid = [ln for ln in ax0.lines if ln.get_linestyle() == "-"]
    assert len(solid) == 6
    got = np.array([ln.get_ydata() for ln in solid])
    np.testing.assert_allclose(got, np.moveaxis(eig[0], -1, 1).reshape(6, 5))
    dashed = [ln for ln in ax0.lines if ln.get_linestyle() == "--"]
    assert len(dashed) == 6 and all(ln.get_ydata()[0] == 0.5 for ln in dashed)
    assert len(ax1.lines) == 6


def test_figure8_and_9_boundaries(grid):
    temps, sig, loss, g = grid
    frac = np.array([[1.0, 1.0, 0.7, 0.2], [0.99, 0.9, 0.3, 0.1], [0.0, 0.5, 0.1, 0.0]])
    fig = plots.figure8(frac, temps, sig, g, g)
    left = fig.axes[0]
    j = int(np.argmin(sig))
    order = np.argsort(temps)
    np.testing.assert_allclose(left.lines[0].get_ydata(), frac[order, j])
    vertical = [ln for ln in left.lines if ln.get_linestyle() == "-."]
    t_c = phase.signal_to_noise_boundary(frac[order], temps[order], 0.68)[j]
    assert len(vertical) == 1 and vertical[0].get_xdata()[0] == pytest.approx(t_c)
    for ax in fig.axes[1:3]:  # centre and right; then come the colour bars
        assert _contour_levels(ax) == list(boundaries.sigma_levels())
    line = boundaries.symmetry_breaking_line(measured_ratio=0.33)
    fig = plots.figure9(loss, g, g, g, frac, temps, sig, epochs=100, line=line)
    ax = fig.axes[0]
    xs = sorted(ln.get_xdata()[0] for ln in ax.lines)
    want = sorted(math.log2(line.inv_sigma_w[k]) for k in ("paper", "input_average", "measured"))
    np.testing.assert_allclose(xs, want)
    assert _contour_levels(ax) == [0.68]
    np.testing.assert_array_equal(np.asarray(_mesh(ax).get_array()).reshape(3, 4),
                                  _sorted(loss, temps, sig))


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    res = train_ensemble(TeacherStudentConfig(n_data=40), temperature=[2.0**-5, 4.0],
                         sigma_w=[0.125, 256.0], n_seeds=3, epochs=3, snapshots=4,
                         progress=False)
    path = tmp_path_factory.mktemp("run") / "run.nc"
    save_result(res, path)
    return res, path


def test_figures_command_writes_all_nine(small_run, tmp_path, capsys):
    res, path = small_run
    out = tmp_path / "figs"
    assert main(["figures", str(path), "--out", str(out), "--format", "png", "--dpi", "40",
                 "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["skipped"] == {}
    assert sorted(payload["written"]) == [f"figure{n}" for n in range(1, 10)]
    for n in range(1, 10):
        assert _is_png(out / f"figure{n}.png")
    # the JSON carries the numbers behind the figures
    s = phase.phase_summary(res)
    labels = phase.classify_phases(s["test_loss"], s["feature_correlation"], s["diverged"])
    assert payload["phases"]["labels"] == labels.tolist()
    assert payload["symmetry_breaking"]["inv_sigma_w"]["paper"] == pytest.approx(math.sqrt(2))
    frac = np.array(payload["signal_to_noise"]["converged_fraction"])
    assert frac.shape == (2, 2) and np.all((frac >= 0) & (frac <= 1))
    assert [c["exact"] for c in payload["figure6_cells"]] == [True, True, True]


def test_figures_command_skips_what_a_single_cell_cannot_show(tmp_path, capsys):
    res = train_ensemble(TeacherStudentConfig(n_data=40), temperature=0.5, sigma_w=1.0,
                         n_seeds=2, epochs=1, progress=False)
    path = save_result(res, tmp_path / "one.nc")
    out = tmp_path / "figs"
    argv = ["figures", str(path), "--out", str(out), "--format", "pdf", "--dpi", "40",
            "--figures", "1", "2", "3", "6", "8", "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert sorted(payload["written"]) == ["figure1", "figure6"]
    assert set(payload["skipped"]) == {"figure2", "figure3", "figure8"}
    assert "2 temperatures" in payload["skipped"]["figure3"]
    assert _is_pdf(out / "figure6.pdf") and not (out / "figure2.pdf").exists()
    assert len(payload["figure6_cells"]) == 1


def test_figures_command_refuses_bad_input(tmp_path, capsys):
    assert main(["figures", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["figures", "x.npz", "--out", str(tmp_path), "--figures", "10"])
