"""Figures of the width-scaling study (docs/studies/width_scaling.py, docs/beyond.md "Width
scaling"): the relative loss against T, the crossover against width, the relative change of W2,
and the lazy -> non-lazy switch. Everything is read from the study's per-model data and its
numbers (the json), so the figures can be rebuilt from the raw npz files."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from dysonsgd.plots.figures import save_figure


def _colours(widths):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return {n: cmap(k / max(len(widths) - 1, 1)) for k, n in enumerate(widths)}


def loss_figure(data, numbers) -> Figure:
    widths = sorted(data)
    col = _colours(widths)
    fig = Figure(figsize=(17, 4.8), layout="constrained")
    axes = fig.subplots(1, 3)
    a = numbers["collapse"]["exponent"]
    for n in widths:
        d = data[n]
        for ax, t, p, style in ((axes[0], d["t_standard"], "standard", "o-"),
                                (axes[1], d["t_mean_field"], "mean_field", "s--")):
            r = d[p]["log10_r"][..., -1]
            m = np.mean(r, axis=1)
            se = np.std(r, axis=1, ddof=1) / math.sqrt(r.shape[1])
            ax.errorbar(t, m, yerr=se, fmt=style, ms=3, color=col[n], label=f"$n_2 = {n}$")
            tsp = np.asarray(t) / (n if p == "mean_field" else 1)
            axes[2].plot(tsp * n**a, m, style, ms=3, color=col[n],
                         label=f"$n_2={n}$ ({'a' if p == 'standard' else 'b'})")
    for ax, xl, title in ((axes[0], r"$T$", "(a) standard parametrisation"),
                          (axes[1], r"$T_b$ (mean-field units)", "(b) 1/n2 readout, lr = T|B|"),
                          (axes[2], rf"$T\, n_2^{{a}}$, $a = {a:.2f}$ (T in (a)'s units)",
                           "collapse")):
        ax.axhline(numbers["level"], color="k", ls=":", lw=1, label="declared level")
        ax.set_xscale("log", base=2)
        ax.set(xlabel=xl, ylabel=r"$\log_{10} L(t_f) / L_0$", title=title)
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=6, ncol=2)
    fig.suptitle(f"tanh, widths (3, 2 n2, n2, 1), 1/sigma_W = 8, {data[widths[0]]['epochs']} "
                 "epochs; mean +- SE over seeds", fontsize=10)
    return fig


def transition_figure(data, numbers) -> Figure:
    widths = sorted(data)
    fig = Figure(figsize=(17, 4.6), layout="constrained")
    a, b, c = fig.subplots(1, 3)
    pw = numbers["per_width"]
    for key, label, style, shift in (("log2_tc_standard", "(a), own ladder", "o", 0),
                                     ("log2_tc_mean_field", "(b), own ladder, / n2", "s", 1),
                                     ("log2_tc_combined", "(a)+(b), half-octave ladder", "^", 0),
                                     ("log2_t_star", r"$T^* = 2/(|B|\lambda)$", "k--", 0)):
        m = np.array([pw[str(n)][key]["mean"] for n in widths]) - shift * np.log2(widths)
        se = [pw[str(n)][key]["se"] for n in widths]
        a.errorbar(widths, 2.0**m, yerr=np.log(2) * 2.0**m * np.asarray(se), fmt=style, ms=4,
                   capsize=2, label=label)
        if key != "log2_t_star":
            b.errorbar(widths, 2.0 ** (m + np.log2(widths)),
                       yerr=np.log(2) * 2.0 ** (m + np.log2(widths)) * np.asarray(se), fmt=style,
                       ms=4, capsize=2, label=label)
    fit = numbers["tc_exponent"]["combined"]
    nn = np.array([widths[0], widths[-1]], float)
    a.plot(nn, 2.0 ** (fit["intercept"] + fit["slope"] * np.log2(nn)), "r:",
           label=rf"fit: $T_c \propto n_2^{{{fit['slope']:.2f} \pm {fit['slope_se_scaled']:.2f}}}$")
    for ax, yl in ((a, r"$T_c$ in (a)'s units"), (b, r"$T_{c,b} = n_2 T_c$ (mean-field units)")):
        ax.set(xscale="log", yscale="log", xlabel=r"$n_2$ ($n_1 = 2 n_2$)", ylabel=yl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.legend(fontsize=7)
    a.set_title(f"crossover: log10 r = {numbers['level']}, mean +- SE over seeds")
    col = _colours(widths)
    for n in widths:
        lab = np.concatenate([np.log2(data[n]["t_standard"]),
                              np.log2(data[n]["t_mean_field"]) - math.log2(n)])
        rr = np.concatenate([data[n]["standard"]["log10_r"][..., -1],
                             data[n]["mean_field"]["log10_r"][..., -1]])
        o = np.argsort(lab)
        tc = pw[str(n)]["log2_tc_combined"]["mean"]
        c.plot(lab[o] - tc, np.mean(rr[o], axis=1), "o-", ms=3, color=col[n],
               label=f"$n_2={n}$")
    c.axhline(numbers["level"], color="k", ls=":", lw=1)
    c.set(xlabel=r"$\log_2 (T / T_c(n_2))$", ylabel=r"mean $\log_{10} L(t_f)/L_0$",
          title="sharpening? (the same x range at every width)")
    c.legend(fontsize=7)
    return fig


def change_figure(data, numbers) -> Figure:
    widths = sorted(data)
    fig = Figure(figsize=(20, 4.6), layout="constrained")
    pw = numbers["per_width"]
    changes = list(next(iter(next(iter(pw.values()))["changes"].values())))
    axes = fig.subplots(1, len(changes))
    keys = list(pw[str(widths[0])]["changes"])
    styles = ["o-", "s-", "o--", "s--"]
    titles = {"frobenius": r"$|\Delta W_2|_F / |W_2(0)|_F$",
              "spectral": r"$|\Delta W_2|_2 / |W_2(0)|_2$",
              "feature": r"$|\Delta W_2 \Phi_1^T|_F / |W_2(0) \Phi_1^T|_F$ (test inputs)",
              "coherent": r"fraction of $|\Delta W_2|_F^2$ along $W_3$"}
    for ax, k in zip(axes, changes, strict=True):
        for key, st in zip(keys, styles, strict=True):
            m = np.array([pw[str(n)]["changes"][key][k]["mean"] for n in widths])
            se = np.array([pw[str(n)]["changes"][key][k]["se"] for n in widths])
            ax.errorbar(widths, 2.0**m, yerr=np.log(2) * 2.0**m * se, fmt=st, ms=4, capsize=2,
                        label=key.replace("_", "-"))
        if k in ("frobenius", "feature"):
            ref = np.array([widths[0], widths[-1]], float)
            ax.plot(ref, (ref / ref[0]) ** -0.5, "k:", label=r"$\propto n_2^{-1/2}$")
        ax.set(xscale="log", yscale="log", xlabel=r"$n_2$", title=titles[k])
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    fig.suptitle("relative change from t = 0 to t_f, mean of log2 +- SE over seeds, at fixed T "
                 "(standard) and fixed T_b (mean-field)", fontsize=10)
    return fig


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def coherence_figure(data, numbers) -> Figure:
    fig = Figure(figsize=(21, 4.8), layout="constrained")
    axes = fig.subplots(1, 4)
    main = data["main"]
    col = _colours(sorted(main))
    for n in sorted(main):
        d = main[n]
        lab = np.concatenate([np.log2(d["t_standard"]),
                              np.log2(d["t_mean_field"]) - math.log2(n)])
        coh = np.concatenate([d["standard"]["coherent"], d["mean_field"]["coherent"]])
        o = np.argsort(lab)
        t_star = np.mean(np.log2(2.0 / (4.0 * np.asarray(d["lambda"]))))
        axes[0].plot(lab[o] - t_star, np.mean(coh[o], axis=1), "o-", ms=3, color=col[n],
                     label=f"$n_2={n}$")
    axes[0].set(xlabel=r"$\log_2 (T / T^*)$, $T^* = 2/(|B|\lambda)$",
                ylabel=r"fraction of $|\Delta W_2|_F^2$ along $W_3$",
                title="main run (post hoc): the rank-one lazy update breaks at T*")
    axes[0].axvline(0.0, color="k", ls="--", lw=1)
    axes[0].legend(fontsize=7)
    conf = data.get("confirm")
    if conf is not None:
        cn = numbers["coherence_confirm"]
        kappa, centre = cn["collapse"]["kappa"], cn["collapse"]["centre_log2_t_b"]
        for n in sorted(conf):
            t = np.log2(conf[n]["t_mean_field"])
            c = conf[n]["mean_field"]["coherent"]
            m, se = np.mean(c, axis=1), np.std(c, axis=1, ddof=1) / math.sqrt(c.shape[1])
            axes[1].errorbar(2.0**t, m, yerr=se, fmt="o-", ms=3, color=col[n],
                             label=f"$n_2={n}$")
            axes[2].plot((t - centre) * n**kappa, m, "o-", ms=3, color=col[n],
                         label=f"$n_2={n}$")
        axes[1].set_xscale("log", base=2)
        axes[1].set(xlabel=r"$T_b$ (mean-field units)", title="confirmatory run (declared)")
        axes[2].set(xlabel=rf"$(\log_2 T_b - {centre:.2f})\, n_2^{{\kappa}}$, "
                           rf"$\kappa = {kappa:.2f}$", title="sharpening collapse",
                    xlim=(-25, 25))
        for ax in axes[1:3]:
            ax.axhline(0.5, color="k", ls=":", lw=1)
            ax.legend(fontsize=7)
    ax = axes[3]
    for key, label, st in (("coherence_main_post_hoc", "main run (post hoc)", "o"),
                           ("coherence_confirm", "confirmatory run", "s")):
        if key not in numbers:
            continue
        pw = numbers[key]["per_width"]
        ws = sorted(int(n) for n in pw)
        for name, lab2, fill in (("log2_tcoh_mean_field", r"$T_{coh,b}$", True),
                                 ("log2_t_star_mean_field", r"$T^*_b$", False)):
            m = np.array([pw[str(n)][name]["mean"] for n in ws])
            se = np.array([pw[str(n)][name]["se"] for n in ws])
            ax.errorbar(ws, 2.0**m, yerr=np.log(2) * 2.0**m * se, fmt=st + ("-" if fill else ":"),
                        ms=4, capsize=2, mfc=None if fill else "none", label=f"{lab2}, {label}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set(xlabel=r"$n_2$", ylabel="mean-field temperature",
           title="the switch and the stability edge in (b)'s units")
    ax.legend(fontsize=7)
    return fig


def save_all(data, numbers, out_dir) -> None:
    """Write width_{loss,transition,change,coherence}.{png,pdf} into ``out_dir``."""
    main = data["main"]
    save_figure(loss_figure(main, numbers), out_dir, "width_loss")
    save_figure(transition_figure(main, numbers), out_dir, "width_transition")
    save_figure(change_figure(main, numbers), out_dir, "width_change")
    save_figure(coherence_figure(data, numbers), out_dir, "width_coherence")
