"""The paper's figures 1-9 from a run: what to measure, what to draw, where to write it.

:func:`paper_figures` computes the observables of a run
(:func:`dysonsgd.analysis.phase.phase_summary`), the phase labels, the symmetry-breaking line
and, for figures 8 and 9, the (4.15) converged fraction per cell
(:func:`dysonsgd.analysis.phase.signal_to_noise_convergence`), draws the figures of
:mod:`dysonsgd.plots.figures` from them and saves each as PNG, PDF or SVG. A figure the run
cannot show (a grid figure from a single row or column, say) is skipped with the reason, never
an error. Test loss and alignment follow the paper's equations (2.6) and (3.5), not the
release's conventions (docs/phase.md); (4.15) defaults to the paper's signed K_S
(:data:`dysonsgd.analysis.phase.FIGURES_CONVENTION`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dysonsgd._checks import InputError
from dysonsgd.analysis import phase
from dysonsgd.measure.spectrum import eigenvalues
from dysonsgd.plots import figures as plots
from dysonsgd.theory import boundaries

__all__ = ["ALL_FIGURES", "FIGURE6_CELLS", "figure6_cells", "paper_figures"]

ALL_FIGURES = tuple(range(1, 10))
#: the three cells of figure 6: (T, 1/sigma_W, title)
FIGURE6_CELLS = ((2.0**-5, 8.0, "ordered"), (4.0, 8.0, "high temperature"),
                 (2.0**-5, 2.0**-8, "disordered (jamming)"))


def _nearest(values: np.ndarray, target: float) -> int:
    return int(np.argmin(np.abs(np.log2(values) - np.log2(target))))


def figure6_cells(result) -> list[dict[str, Any]]:
    """The run's cells nearest (in log2) to the paper's three figure-6 points, duplicates
    dropped: ``index`` (i_T, i_S), ``name``, ``temperature``, ``inv_sigma_w`` and ``exact``
    (whether the run has the paper's point itself)."""
    out, seen = [], set()
    inv = 1.0 / result.sigma_w
    for t, v, name in FIGURE6_CELLS:
        i, j = _nearest(result.temperature, t), _nearest(inv, v)
        if (i, j) in seen:
            continue
        seen.add((i, j))
        out.append({"index": (i, j), "name": name, "temperature": float(result.temperature[i]),
                    "inv_sigma_w": float(inv[j]),
                    "exact": bool(np.isclose(result.temperature[i], t)
                                  and np.isclose(inv[j], v))})
    return out


def paper_figures(result, out_dir: str | Path, *, figures: Iterable[int] = ALL_FIGURES,
                  convention: str = phase.FIGURES_CONVENTION,
                  formats: Sequence[str] = ("png", "pdf"), chunk: int = 256, dpi: int = 150,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build and save the requested figures of the paper from a run.

    Parameters
    ----------
    result : dysonsgd.train.ensemble.EnsembleResult
    out_dir : path
        Directory for ``figure{n}.{format}`` (created if missing).
    figures : iterable of int in 1..9
    convention : {'paper', 'release'}
        Form of K_S, V_S in (4.15) for figures 8 and 9.
    formats : sequence of {'png', 'pdf', 'svg'}
    chunk : int
        Models per K/V batch (:func:`dysonsgd.measure.gradstats.measure`).
    dpi : int
        Resolution of PNG files.
    progress : callable, optional
        Called with a short message before each stage.

    Returns
    -------
    dict with ``grid``, ``epochs``, ``convention``, the numbers behind the figures
    (``symmetry_breaking``, ``phases``, ``signal_to_noise``, ``figure6_cells``, as far as they
    were needed), ``out``, ``written`` (figure -> paths) and ``skipped`` (figure -> reason).
    """
    say = progress or (lambda msg: None)
    which = sorted(set(figures))
    bad = [n for n in which if n not in ALL_FIGURES]
    if bad:
        raise InputError(f"figures must be among 1..9, got {bad}")
    if convention not in boundaries.CONVENTIONS:
        raise InputError(f"convention must be one of {boundaries.CONVENTIONS}, got {convention!r}")
    n_t, n_s, n_r = result.diverged.shape
    temps, sig = result.temperature, result.sigma_w
    written: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    info: dict[str, Any] = {"grid": [n_t, n_s, n_r], "epochs": int(result.epochs),
                            "convention": convention}

    def save(n: int, fig) -> None:
        written[f"figure{n}"] = [str(p) for p in plots.save_figure(fig, out_dir, f"figure{n}",
                                                                    formats, dpi)]

    needs_run = [n for n in which if n != 1]
    s = None
    if needs_run:
        say("computing observables")
        s = phase.phase_summary(result)
        mean = {k: np.nanmean(s[k], axis=-1) for k in ("test_loss", "feature_correlation",
                                                       "alignment", "gradient_norm", "rate")}
        rho = float(np.mean(s["preactivation_ratio"][0, 0])) if result.config.activation == \
            "tanh" else None
        line = boundaries.symmetry_breaking_line(result.config.widths, measured_ratio=rho)
        info["symmetry_breaking"] = line.to_dict()
        if result.config.task == "teacher":
            rule = phase.PhaseThresholds.for_activation(result.config.activation,
                                                        depth=len(result.config.widths) - 2)
            labels = phase.classify_summary(s, rule)
            info["phases"] = {"temperature": temps.tolist(), "inv_sigma_w": (1 / sig).tolist(),
                              "labels": labels.tolist(), "thresholds": rule.to_dict(),
                              "activation": result.config.activation}
        else:  # the teacher's thresholds are never applied to real labels
            info["phases"] = {"labels": None, "task": result.config.task,
                              "reason": "no phase rule is derived for this task (docs/beyond.md)"}
    grid_ok = n_t >= 2 and n_s >= 2
    frac = None
    if {8, 9} & set(which) and grid_ok:
        say(f"measuring K and V on {result.n_models} models")
        _, frac = phase.signal_to_noise_convergence(result, convention, chunk=chunk)
        order = np.argsort(temps)
        info["signal_to_noise"] = {
            "converged_fraction": frac.tolist(),
            "sigma_w": sig.tolist(),
            "boundary_temperature": {
                str(level): phase.signal_to_noise_boundary(frac[order], temps[order],
                                                           level).tolist()
                for level in boundaries.sigma_levels()},
        }
    loss_range = _loss_range(result, mean["test_loss"]) if needs_run else plots.LOSS_RANGE
    for n in which:
        say(f"figure {n}")
        if n == 1:
            save(1, plots.figure1())
        elif n in (2, 5, 7) and not grid_ok:
            skipped[f"figure{n}"] = (f"needs at least 2 temperatures and 2 sigma_W (the run has "
                                     f"{n_t} x {n_s})")
        elif n == 2:
            save(2, plots.figure2(mean["test_loss"], temps, sig, loss_range))
        elif n == 3:
            if n_t < 2:
                skipped["figure3"] = "needs at least 2 temperatures"
                continue
            save(3, plots.figure3(mean["test_loss"], mean["gradient_norm"], temps, sig))
        elif n == 4:
            if n_t < 2:
                skipped["figure4"] = "needs at least 2 temperatures"
                continue
            j = int(np.argmin(sig))
            i0 = int(np.argmin(temps))
            save(4, plots.figure4(temps, s["test_loss"][:, j], s["gradient_norm"][:, j],
                                  float(1 / sig[j]), sig, s["initial_gradient_norm"][i0],
                                  float(temps[i0])))
        elif n == 5:
            save(5, plots.figure5(mean["feature_correlation"], mean["alignment"], temps, sig))
        elif n == 6:
            cells = figure6_cells(result)
            eig, tgt, titles = [], [], []
            w2t = result.teacher()[1]
            for c in cells:
                i, j = c["index"]
                eig.append(eigenvalues(result.w2[i, j]))
                tgt.append(eigenvalues(w2t[i, j]))
                titles.append(f"{c['name']}\n$T = {c['temperature']:g}$, "
                              f"$1/\\sigma_W = {c['inv_sigma_w']:g}$")
            info["figure6_cells"] = [{k: v for k, v in c.items() if k != "index"}
                                     for c in cells]
            save(6, plots.figure6(result.snapshot_epochs, eig, tgt, titles))
        elif n == 7:
            save(7, plots.figure7(mean["rate"], temps, sig, result.epochs))
        elif n in (8, 9) and frac is None:
            skipped[f"figure{n}"] = (f"needs at least 2 temperatures and 2 sigma_W for the "
                                     f"(4.15) contours (the run has {n_t} x {n_s})")
        elif n == 8:
            save(8, plots.figure8(frac, temps, sig, mean["feature_correlation"],
                                  mean["alignment"]))
        elif n == 9:
            save(9, plots.figure9(mean["test_loss"], mean["feature_correlation"],
                                  mean["alignment"], mean["rate"], frac, temps, sig,
                                  result.epochs, line, loss_range=loss_range))
    return {**info, "out": str(out_dir), "written": written, "skipped": skipped}


def _loss_range(result, loss_mean: np.ndarray) -> tuple[float, float]:
    """The colour range of the test loss: the paper's (1e-7, 1e-1) for the teacher; for a
    fixed-data task (whose loss against labels stays far above the paper's scale) the decades
    spanning the finite cell means."""
    finite = np.asarray(loss_mean, float)
    finite = finite[np.isfinite(finite) & (finite > 0)]
    if result.config.task == "teacher" or finite.size == 0:
        return plots.LOSS_RANGE
    lo, hi = np.floor(np.log10(finite.min())), np.ceil(np.log10(finite.max()))
    return float(10.0**lo), float(10.0 ** max(hi, lo + 1))
