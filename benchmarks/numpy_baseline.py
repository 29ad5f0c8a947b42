"""Tuned per-model NumPy loop: the baseline of ``train_throughput.py`` and the tests' reference.

One model at a time, float64 by default, the release's algorithm (see ``reference-notes.md``)
with what can be hoisted hoisted: the layer-1 features ``phi1 = act(W1 x)`` and the targets are
computed once, so an SGD step is three small products (``z = P W2^T``, ``yhat = h W3^T``,
``g = delta^T P``) plus elementwise work. Snapshot, divergence and loss conventions are those of
:func:`dysonsgd.train.train_ensemble` (epoch-mean gradient and loss at the snapshots, the
full-data gradient and loss at snapshot 0; a batch loss above the threshold stops the model,
later snapshots repeat its W2 and that batch's gradient, with a NaN loss). It is written
independently of :mod:`dysonsgd.model` (its own activations and forward pass), so that the tests
can use it as a reference.

Run ``python benchmarks/numpy_baseline.py`` for its model-steps/s on the paper's widths.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np


def _act(name: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if name == "tanh":
        h = np.tanh(z)
        return h, 1.0 - h * h
    if name == "relu":
        pos = z > 0
        return z * pos, pos.astype(z.dtype)
    if name == "identity":
        return z, np.ones_like(z)
    raise ValueError(f"unknown activation {name!r}")


def train_single(
    x: np.ndarray,
    w1: np.ndarray,
    w2_teacher: np.ndarray,
    w3: np.ndarray,
    w2_init: np.ndarray,
    lr: float,
    epochs: int,
    batch_size: int = 4,
    activation: str = "tanh",
    threshold: float = 100.0,
    snapshot_epochs=None,
    order=None,
    dtype=np.float64,
) -> dict[str, np.ndarray]:
    """Train one student by SGD (2.28) with a plain NumPy loop.

    Parameters
    ----------
    x : (n_data, n0) inputs; w1 : (n1, n0); w2_teacher : (n2, n1); w3 : (n3, n2)
    w2_init : (n2, n1) the student's W2(0)
    lr : learning rate (``T * batch_size``)
    epochs : int
    snapshot_epochs : sequence of int, optional
        Epoch counts to record (default ``[0, epochs]``); must start at 0.
    order : callable ``epoch -> permutation`` or None
        Data order per epoch (None: fixed, consecutive batches).

    Returns
    -------
    dict with ``w2`` (n_snap, n2, n1), ``grad`` (n_snap, n2, n1), ``loss`` (n_snap,),
    ``diverged_epoch``, ``diverged_step`` (-1 when it did not diverge).
    """
    snaps = [0, epochs] if snapshot_epochs is None else [int(e) for e in snapshot_epochs]
    x = np.asarray(x, np.float64)
    phi1_all, _ = _act(activation, x @ w1.T)
    h_t, _ = _act(activation, phi1_all @ w2_teacher.T)
    y_all = (h_t @ w3.T).astype(dtype)
    phi1_all = phi1_all.astype(dtype)
    w3 = np.asarray(w3, dtype)
    w3t = np.ascontiguousarray(w3.T)
    w2 = np.array(w2_init, dtype=dtype)
    n_data = x.shape[0]
    steps = n_data // batch_size
    n2, n1 = w2.shape
    out_w2 = np.empty((len(snaps), n2, n1), dtype)
    out_g = np.empty((len(snaps), n2, n1), dtype)
    out_loss = np.full(len(snaps), np.nan)

    # snapshot 0: full-data gradient and loss
    h, dact = _act(activation, phi1_all @ w2.T)
    err = h @ w3t - y_all
    out_w2[0] = w2
    out_g[0] = ((err @ w3) * dact).T @ phi1_all / n_data
    out_loss[0] = 0.5 * np.mean(np.sum(err * err, axis=1))
    rec = {e: k for k, e in enumerate(snaps) if k > 0}
    c = lr / batch_size
    div_epoch = div_step = -1
    end_grad = None
    for e in range(epochs):
        if order is None:
            phi1, y = phi1_all, y_all
        else:
            perm = order(e)
            phi1, y = phi1_all[perm], y_all[perm]
        k = rec.get(e + 1, -1)
        gsum = np.zeros_like(w2) if k >= 0 else None
        lsum = 0.0
        for s in range(steps):
            p = phi1[s * batch_size:(s + 1) * batch_size]
            h, dact = _act(activation, p @ w2.T)
            err = h @ w3t - y[s * batch_size:(s + 1) * batch_size]
            loss = 0.5 * np.sum(err * err) / batch_size
            g = ((err @ w3) * dact).T @ p
            if not loss <= threshold:
                div_epoch, div_step, end_grad = e, s, g / batch_size
                break
            w2 -= c * g
            lsum += loss
            if gsum is not None:
                gsum += g
        if div_epoch >= 0:
            for kk, ee in enumerate(snaps):
                if kk > 0 and ee >= e + 1:
                    out_w2[kk] = w2
                    out_g[kk] = end_grad
                    out_loss[kk] = np.nan
            break
        if k >= 0:
            out_w2[k] = w2
            out_g[k] = gsum / (batch_size * steps)
            out_loss[k] = lsum / steps
    return {"w2": out_w2, "grad": out_g, "loss": out_loss, "diverged_epoch": div_epoch,
            "diverged_step": div_step}


def paper_model(seed: int = 0, widths=(3, 32, 16, 1), n_data: int = 4000, sigma_w: float = 0.125):
    """Teacher, inputs and W2(0) drawn as :func:`dysonsgd.model.draws.replica_draws` does."""
    n0, n1, n2, n3 = widths
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(0,))))
    w1 = rng.standard_normal((n1, n0)) / math.sqrt(n0)
    w2t = rng.standard_normal((n2, n1)) / math.sqrt(n1)
    w3 = rng.standard_normal((n3, n2)) / math.sqrt(n2)
    x = rng.standard_normal((n_data, n0))
    w2_init = sigma_w * rng.standard_normal((n2, n1)) / math.sqrt(n1)
    return x, w1, w2t, w3, w2_init


def measure(epochs: int = 2, repeats: int = 3, dtype=np.float64) -> dict[str, float]:
    """Best-of-``repeats`` model-steps/s of :func:`train_single` on the paper's set-up."""
    x, w1, w2t, w3, w2_init = paper_model()
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        train_single(x, w1, w2t, w3, w2_init, lr=2.0**-5 * 4, epochs=epochs, dtype=dtype)
        best = min(best, time.perf_counter() - t)
    steps = epochs * 1000
    return {"model_steps_per_s": steps / best, "seconds": best, "model_steps": steps}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    res = measure(args.epochs)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"numpy per-model loop: {res['model_steps_per_s']:,.0f} model-steps/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
