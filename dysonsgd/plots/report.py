"""The Markdown report and figures of ``dysonsgd validate`` (I/O at the edge: matplotlib, files).

:func:`write_report` takes the :class:`~dysonsgd.analysis.validation.Outcome` of
:func:`dysonsgd.analysis.validation.evaluate` (checks, cells and per-cell S(t) traces) and writes
``report.md`` with PNG and PDF figures into a directory. Figures are
:class:`matplotlib.figure.Figure` objects saved by :func:`dysonsgd.plots.figures.save_figure`,
as everywhere in :mod:`dysonsgd.plots` (no pyplot, no global state).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dysonsgd.analysis.validation import Outcome
from dysonsgd.plots.figures import save_figure

__all__ = ["figure_spacing", "write_report"]


def figure_spacing(traces: Mapping[tuple[float, float], Any]) -> Figure | None:
    """S(t) of every predicted cell: training against (4.3) and (4.8), mean and one standard
    deviation (:func:`dysonsgd.analysis.validation.spacing_traces`); None without traces."""
    keys = [k for k in traces if traces[k] is not None]
    if not keys:
        return None
    ncol = min(4, len(keys))
    nrow = -(-len(keys) // ncol)
    fig = Figure(figsize=(3.2 * ncol, 2.6 * nrow), layout="tight")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        tr = traces[key]
        t = tr["epochs"]
        for name, colour in (("observed", "k"), ("dbm", "C0"), ("sde", "C3")):
            if name not in tr:
                continue
            mean, sd = tr[name]
            ax.plot(t, mean, color=colour, label={"observed": "training",
                                                   "dbm": "eigenvalue SDE",
                                                   "sde": "spacing SDE (4.8)"}[name])
            ax.fill_between(t, mean - sd, mean + sd, color=colour, alpha=0.15, lw=0)
        ax.set_title(f"T = {key[0]:g}, 1/$\\sigma_W$ = {key[1]:g}", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("S", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    return fig


def write_report(outcome: Outcome, out_dir: str | Path, title: str, wall_time: float) -> Path:
    """Write ``report.md`` and ``spacing.png``/``.pdf`` into ``out_dir``; return the report path.

    Parameters
    ----------
    outcome : Outcome
        Of :func:`dysonsgd.analysis.validation.evaluate`; its ``traces`` are
        {(T, 1/sigma_W): {"epochs": (n_t,), "observed"/"dbm"/"sde": (mean, sd)}}
    out_dir : path
        Created if missing.
    title : str
        The config's name.
    wall_time : float
        Seconds the validation took, for the report.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig = figure_spacing(outcome.traces)
    figs = [] if fig is None else save_figure(fig, out_dir, "spacing", ("png", "pdf"), dpi=120)
    checks = outcome.checks
    n_off = outcome.n_failed
    counts = {v: sum(c.verdict == v for c in checks) for v in ("PASS", "FAIL", "NO POWER")}
    lines = [f"# dysonsgd validate: {title}", "",
             ("Every verdict as expected" if not n_off else
              f"**{n_off} verdicts not as expected**")
             + f": {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['NO POWER']} no power "
             f"of {len(checks)} checks; wall time {wall_time:.1f} s.", "",
             "## Checks", "",
             "| check | forecast | T | 1/sigma_W | metric | p | tolerance | verdict | expected |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in checks:
        verdict = c.verdict if c.as_expected else f"**{c.verdict}**"
        lines.append(f"| {c.name} | {c.forecast} | {c.temperature:g} | {c.inv_sigma_w:g} | "
                     f"{c.metric:.4g} | {c.pvalue:.2g} | {c.tolerance} | {verdict} | "
                     f"{c.expected} |")
    if outcome.controls:
        lines += ["", "## Controls (replay forecast)", "",
                  "| control | expected | verdict | checks that failed it (cells) |",
                  "| --- | --- | --- | --- |"]
        for ctl in outcome.controls:
            hit = ", ".join(f"{k} ({len(v)})" for k, v in ctl["failed_cells"].items() if v)
            verdict = ctl["verdict"] if ctl["verdict"] == ctl["expected"] else \
                f"**{ctl['verdict']}**"
            lines.append(f"| {ctl['name']} | {ctl['expected']} | {verdict} | {hit or '-'} |")
        lines += ["", "| check | power over the negative controls | positive-control rejection "
                      "rate |", "| --- | --- | --- |"]
        for name, pw in outcome.power.items():
            power = "-" if pw["power"] is None else \
                f"{pw['power']:.2f} ({pw['failed_pairs']}/{pw['pairs']})"
            size = pw["positive_control_rejection_rate"]
            lines.append(f"| {name} | {power} | {'-' if size is None else format(size, '.2f')} |")
    findings = list(outcome.findings)
    if findings:
        lines += ["", "## Declared findings", ""]
        lines += [f"- {f.check} ({f.forecast or 'every forecast'}, "
                  f"{f.phase or 'every phase'}): expected {f.expected}; {f.reason}"
                  for f in findings]
    lines += ["", "## Cells", "",
              "| T | 1/sigma_W | expected | phase | test loss | G(t_f,0) | S observed | "
              "S DBM | S (4.8) | KS p | x_1 < 0 | (4.15) conv. | observed conv. |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def f(c, key, fmt=".3g"):
        v = c.get(key)
        return "-" if v is None else format(v, fmt)

    for c in outcome.cells:
        lines.append(
            f"| {c['temperature']:g} | {c['inv_sigma_w']:g} | {c['expected_phase']} | "
            f"{c['phase']} | {f(c, 'test_loss_median')} | {f(c, 'feature_correlation_median')} "
            f"| {f(c, 'spacing_observed_mean')} | {f(c, 'spacing_dbm_mean')} | "
            f"{f(c, 'spacing_sde_mean')} | {f(c, 'spacing_ks_pvalue', '.2g')} | "
            f"{f(c, 'negative_fraction', '.2f')} | "
            f"{f(c, 'converged_415_fraction', '.2f')} | "
            f"{f(c, 'observed_converged_fraction', '.2f')} |")
    opts = outcome.options
    lines += ["", "## Method", "",
              f"Forecasts {', '.join(opts['forecasts'])} of the {opts['variant']} eigenvalue "
              f"SDE start at snapshot {opts['start_snapshot']} (closed-loop: at 0), with "
              f"{opts['paths_per_model']} paths per model and {opts['steps_per_interval']} "
              f"steps between snapshots; the drift K comes from the {opts['drift']} data, the "
              "(4.15) verdict uses the paper's convention with the same K. Levels and margins: "
              + ", ".join(f"{k} = {v:g}" for k, v in outcome.tolerances.items()) + ".", ""]
    if figs:
        lines += ["## Mean level spacing: training against the SDEs", "",
                  f"![S(t): mean and one standard deviation]({figs[0].name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
