"""The all-layer study's measurements (issue 16, docs/beyond.md "All layers trained").

Each against an independent oracle: the per-layer spectrum against numpy's SVD; the observables
and K, V of an all-layer run against the network of any depth (:mod:`dysonsgd.model.layers`)
evaluated on the student's recorded matrices, which shares no code with
:mod:`dysonsgd.model.network` and the compiled K, V kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

from dysonsgd.measure import gradstats
from dysonsgd.measure import observables as ob
from dysonsgd.measure.spectrum import eigensystem, layer_eigenvalues
from dysonsgd.model import layers
from dysonsgd.model.config import TeacherStudentConfig
from dysonsgd.train import train_ensemble


def test_layer_eigenvalues_against_svd() -> None:
    rng = np.random.default_rng(3)
    for shape in ((32, 3), (16, 32), (1, 16), (5, 5), (2, 7, 4)):
        w = rng.standard_normal(shape)
        svd = np.linalg.svd(w, compute_uv=False)
        np.testing.assert_allclose(layer_eigenvalues(w), np.sort(svd**2, axis=-1), rtol=1e-12)
    # a known matrix: diag(3, 2) padded to 4 x 2 (a tall W1): squared singular values 4, 9
    w = np.zeros((4, 2))
    w[0, 0], w[1, 1] = 3.0, 2.0
    np.testing.assert_array_equal(layer_eigenvalues(w), [4.0, 9.0])
    assert layer_eigenvalues(np.array([[3.0, 4.0]])).tolist() == [25.0]  # a row: ||W3||^2


@pytest.fixture(scope="module")
def run():
    cfg = TeacherStudentConfig(trained_layers="all", n_data=64)
    return train_ensemble(cfg, temperature=[2.0**-3, 1.0], sigma_w=[0.5, 2.0], n_seeds=2,
                          epochs=3, snapshots=3, seed=5, dtype="float32", progress=False)


def test_all_layer_observables_read_the_student(run) -> None:
    assert set(run.layer_w) == {1, 3}
    for w in (run.layer_w[1], run.layer_w[3]):  # W1 and W3 trained
        assert not np.array_equal(w[..., -1, :, :], w[..., 0, :, :])
    x = ob.test_inputs(128, 3, 42)
    teacher = [np.asarray(a, float) for a in run.teacher_matrices()]
    student = [np.asarray(a, float) for a in run.student(-1)]
    y = layers.outputs(x, teacher, "tanh")
    yhat = layers.outputs(x, student, "tanh")
    loss = 0.5 * np.mean(np.sum((yhat - y) ** 2, axis=-1), axis=-1)
    np.testing.assert_allclose(ob.result_test_loss(run, -1, convention="paper"), loss,
                               rtol=1e-10)
    h_f, _ = layers.forward(x, student, "tanh")
    h_0, _ = layers.forward(x, [np.asarray(a, float) for a in run.student(0)], "tanh")
    g = np.mean(h_f[2] * h_0[2], axis=(-2, -1))
    np.testing.assert_allclose(ob.result_feature_correlation(run), g, rtol=1e-10)
    field = y @ student[2]  # h (2.25) with the student's readout
    al = np.sum(field * h_f[2], axis=(-2, -1)) / (
        np.linalg.norm(field, axis=(-2, -1)) * np.linalg.norm(h_f[2], axis=(-2, -1)))
    np.testing.assert_allclose(ob.result_alignment(run), al, rtol=1e-10)


def test_all_layer_gradient_statistics_use_the_students_w1_w3(run) -> None:
    x = ob.test_inputs(128, 3, 42)
    teacher = [np.asarray(a, float) for a in run.teacher_matrices()]
    y = layers.outputs(x, teacher, "tanh")
    for snap in (0, -1):
        stats = gradstats.measure(run, snap)
        student = [np.asarray(a, float) for a in run.student(snap)]
        grads, _ = layers.per_sample_gradients(x, y, student, "tanh", layers=[2])
        _, u = eigensystem(student[1])
        k, v = gradstats.drift_and_noise(student[1], grads[2], basis=u)
        diag = np.einsum("...ii->...i", stats.k)
        np.testing.assert_allclose(diag, np.einsum("...ii->...i", k), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(np.einsum("...ii->...i", stats.v),
                                   np.einsum("...ii->...i", v), rtol=1e-8, atol=1e-14)
    # at the last snapshot W1, W3 have moved: the teacher's would give another K
    wrong = [teacher[0], np.asarray(run.w2[..., -1, :, :], float), teacher[2]]
    g_wrong, _ = layers.per_sample_gradients(x, y, wrong, "tanh", layers=[2])
    k_wrong, _ = gradstats.drift_and_noise(wrong[1], g_wrong[2], basis=eigensystem(wrong[1])[1])
    assert not np.allclose(np.einsum("...ii->...i", stats.k),
                           np.einsum("...ii->...i", k_wrong), rtol=1e-6)


def test_layer_figures_draw_the_arrays(tmp_path) -> None:
    from matplotlib.collections import QuadMesh

    from dysonsgd.plots import layers as lp
    from dysonsgd.plots.figures import save_figure

    rng = np.random.default_rng(1)
    temps, sig = np.array([0.5, 0.03125]), np.array([0.125, 4.0, 256.0])
    med = {k: rng.uniform(0.1, 0.9, (2, 3)) for k in lp.OBSERVABLES}
    diff = {k: rng.uniform(-1, 1, (2, 3)) for k in lp.OBSERVABLES}
    fig = lp.diagram_comparison({"a": med, "b": med}, temps, sig, 100.0, diff)
    meshes = [c for ax in fig.axes[:12] for c in ax.collections if isinstance(c, QuadMesh)]
    assert len(meshes) == 12
    # rows in ascending T (the grid's rows reversed), columns in ascending 1/sigma_W (reversed)
    np.testing.assert_array_equal(meshes[1].get_array(), med["feature_correlation"][::-1, ::-1])
    last = meshes[-1]
    assert last.norm.vmin == -last.norm.vmax == -np.max(np.abs(diff["rate"]))
    eig = rng.uniform(1, 2, (4, 5, 3))  # 4 models, 5 snapshots, 3 levels
    fig = lp.layer_spectra(np.arange(5), [[{"a": eig, "b": 2 * eig}]], ["cell"], ["W1"],
                           [[np.ones((4, 3))]])
    lines = fig.axes[0].get_lines()
    np.testing.assert_array_equal(lines[0].get_ydata(), eig[0, :, 0])
    np.testing.assert_array_equal(lines[12].get_ydata(), 2 * eig[0, :, 0])
    assert len(lines) == 24 + 12  # 2 runs x 12 level paths, 12 target lines
    m, s = rng.standard_normal(5), rng.uniform(0, 1, 5)
    fig = lp.layer_spacing(np.arange(5), [{"W1, a": (m, s), "W2, a": (m, s)}], ["cell"])
    np.testing.assert_array_equal(fig.axes[0].get_lines()[0].get_ydata(), m)
    paths = save_figure(fig, tmp_path, "spacing")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size for p in paths)


def test_figures_command_on_an_all_layer_run(run, tmp_path, capsys) -> None:
    import json

    from dysonsgd.analysis.phase import classify_phases
    from dysonsgd.cli import main
    from dysonsgd.runs.files import save_result

    path = save_result(run, tmp_path / "all.nc")
    assert main(["figures", str(path), "--out", str(tmp_path / "f"), "--format", "png", "--dpi",
                 "30", "--figures", "2", "5", "8", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert sorted(payload["written"]) == ["figure2", "figure5", "figure8"]
    # the labels from the oracle's loss and G(t_f, 0) (the whole student, model.layers)
    x = ob.test_inputs(128, 3, 42)
    teacher = [np.asarray(a, float) for a in run.teacher_matrices()]
    student = [np.asarray(a, float) for a in run.student(-1)]
    loss = 0.5 * np.mean(np.sum((layers.outputs(x, student, "tanh")
                                 - layers.outputs(x, teacher, "tanh")) ** 2, axis=-1), axis=-1)
    h_f, _ = layers.forward(x, student, "tanh")
    h_0, _ = layers.forward(x, [np.asarray(a, float) for a in run.student(0)], "tanh")
    g = np.mean(h_f[2] * h_0[2], axis=(-2, -1))
    assert payload["phases"]["labels"] == classify_phases(loss, g, run.diverged).tolist()
