"""`SpectrumMonitor`: the eigenvalue dynamics and phase of any PyTorch model while it trains.

The monitor hangs on a plain training loop through ``optimizer.register_step_post_hook``: it
counts optimizer steps and every ``every`` steps records, per monitored layer W (N x M,
:mod:`dysonsgd.monitor.layers`), the spectrum of X = W W^T (:mod:`dysonsgd.monitor.spectra`)
and, on a probe batch, K, V (4.4), the complete eigenvalue SDE's terms and the (4.15) side
(:mod:`dysonsgd.monitor.probe`). It reads the weights and computes on copies: the training
trajectory is bitwise that of the same loop without it.

    with SpectrumMonitor(model, opt, every=100, probe=(x, y), loss_fn=loss_fn,
                         store="run.zarr") as mon:
        for xb, yb in loader:
            opt.zero_grad(); loss_fn(model(xb), yb).backward(); opt.step()
    ds = mon.to_xarray()
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dysonsgd._checks import InputError, check_int, check_positive
from dysonsgd.measure.spectrum import eigensystem, eigenvalues
from dysonsgd.monitor.layers import MonitoredLayer, SGDSettings, select_layers, sgd_settings
from dysonsgd.monitor.probe import (
    PROBE_MATRICES,
    PROBE_SCALARS,
    PROBE_VECTORS,
    check_probe,
    per_sample_gradients,
    probe_terms,
)
from dysonsgd.monitor.spectra import heavy_tail_available, heavy_tail_exponent, spectrum_statistics
from dysonsgd.monitor.store import FORMAT, Field, Layout, RecordStore, open_store
from dysonsgd.theory import rmt

__all__ = ["SpectrumMonitor"]

#: per-layer scalars of every record
SPECTRUM_SCALARS = ("level_spacing", "ratio_mean", "mp_sigma2", "mp_edge", "mp_ks",
                    "learning_rate", "temperature", "time")
HEAVY_TAIL = ("alpha", "alpha_xmin", "alpha_sigma")
FLAGS = ("converged", "converged_complete")


def _layout(layers: Sequence[MonitoredLayer], probe: bool, heavy_tail: bool) -> Layout:
    fields = [Field("step", (), (), "int"), Field("probed", (), (), "flag"),
              Field("probe_loss", (), ())]
    for layer in layers:
        p, n = layer.name, layer.n_rows
        i, j = f"{p}__i", f"{p}__j"
        fields.append(Field(f"{p}__eigenvalues", (i,), (n,)))
        fields += [Field(f"{p}__{q}", (), ()) for q in SPECTRUM_SCALARS]
        fields.append(Field(f"{p}__n_spikes", (), (), "int"))
        if heavy_tail:
            fields += [Field(f"{p}__{q}", (), ()) for q in HEAVY_TAIL]
        if probe:
            fields += [Field(f"{p}__{q}", (), (), "flag" if q in FLAGS else "float")
                       for q in PROBE_SCALARS]
            fields += [Field(f"{p}__{q}", (i,), (n,)) for q in PROBE_VECTORS]
            fields += [Field(f"{p}__{q}", (i, j), (n, n)) for q in PROBE_MATRICES]
    return Layout(fields)


#: largest N of a monitored matrix for which a record runs BLAS on one thread
SINGLE_BLAS_MAX_ROWS = 512


@contextlib.contextmanager
def _blas_threads(single: bool):
    """BLAS on one thread inside (with ``threadpoolctl``, if installed), if ``single``.

    The eigenvalue problems and moments of layers up to a few hundred rows are small
    products, for which a BLAS thread team only adds latency (5x on a busy two-core host for
    N = 64); larger layers keep the threads.
    """
    if single and _THREADPOOLS is not None:
        with _THREADPOOLS.limit(limits=1, user_api="blas"):
            yield
    else:
        yield


def _threadpools():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: without it BLAS keeps its threads
        return None
    return ThreadpoolController()


_THREADPOOLS = _threadpools()


class SpectrumMonitor:
    """Record the spectrum, K, V and the phase of each layer of ``model`` while it trains.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : torch.optim.SGD
        The optimizer of the loop; T = lr_eff / |B| per param group (momentum and weight decay:
        :mod:`dysonsgd.monitor.layers`); any other optimizer is refused.
    every : int
        Record after every ``every``-th optimizer step (100).
    probe : (inputs, targets), optional
        A fixed batch of P >= 2 points for the per-sample gradients (K, V, the complete SDE's
        terms, the spacing coefficients and (4.15)); without it only spectra are recorded.
    loss_fn : callable, optional
        ``loss_fn(output, target)``, the batch-mean loss of training; required with ``probe``.
    store : str or path, optional
        A new Zarr store written incrementally, one row per record (a killed run keeps every
        completed record; :func:`dysonsgd.monitor.store.open_store`).
    layers : sequence of str, optional
        Parameter or module names (default: every ``nn.Linear`` weight).
    batch_size : int, optional
        |B| of the temperature; default the leading size of the model's first tensor input in
        the last forward pass with grad enabled before the step (give it for gradient
        accumulation or inputs that are not batch-first; until a step is seen T is NaN).
    probe_every : int, optional
        Probe every ``probe_every`` steps, a multiple of ``every`` (default ``every``): the
        probe costs far more than a spectrum.
    sigma_w : float or mapping name -> float, optional
        sigma_W of the initial spacing bound S_0 (4.14) in (4.15); default sqrt of the mean
        eigenvalue of X when the monitor is attached (the MP mean sigma_W^2 (4.2) for i.i.d.
        initial weights of variance sigma_W^2 / M).
    heavy_tail : bool
        Also fit the tail exponent alpha (needs the optional package ``powerlaw``).
    record_initial : bool
        Record step 0 when attached (True).
    chunk_size : int, optional
        Probe points per vectorised chunk of ``vmap`` (memory).

    Raises
    ------
    InputError
        Before any training: no matching layer, an optimizer without a temperature, a probe
        that does not fit the model and ``loss_fn``, or another bad argument (named).
    """

    def __init__(self, model: nn.Module, optimizer, *, every: int = 100, probe=None,
                 loss_fn: Callable | None = None, store=None,
                 layers: Sequence[str] | None = None, batch_size: int | None = None,
                 probe_every: int | None = None, sigma_w=None, heavy_tail: bool = False,
                 record_initial: bool = True, chunk_size: int | None = None) -> None:
        self.every = check_int("every", every)
        self.probe_every = self.every if probe_every is None else check_int("probe_every",
                                                                            probe_every)
        if self.probe_every % self.every:
            raise InputError(f"probe_every must be a multiple of every = {self.every}, got "
                             f"{self.probe_every}")
        self.layers = select_layers(model, optimizer, layers)
        self.model, self.optimizer = model, optimizer
        self.sgd = {g: sgd_settings(optimizer, g) for g in {la.group for la in self.layers}}
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size)
        if heavy_tail and not heavy_tail_available():
            heavy_tail_exponent([1.0])  # raises the InputError naming the missing package
        self.heavy_tail = bool(heavy_tail)
        self.chunk_size = None if chunk_size is None else check_int("chunk_size", chunk_size)
        if probe is None and loss_fn is not None:
            raise InputError("loss_fn is used on the probe only: give probe=(inputs, targets)")
        self.probe = None if probe is None else check_probe(model, probe, loss_fn)
        self.loss_fn = loss_fn
        self.params = dict(model.named_parameters())
        self._single_blas = max(la.n_rows for la in self.layers) <= SINGLE_BLAS_MAX_ROWS
        self.sigma2 = self._sigma2(sigma_w)
        self.layout = _layout(self.layers, self.probe is not None, self.heavy_tail)
        self.attrs = self._attrs()
        self.store = None if store is None else RecordStore(store, self.layout, self.attrs)
        self.step = 0
        self.time = dict.fromkeys((la.name for la in self.layers), 0.0)
        self._rows: list[np.ndarray] = []
        self._last_recorded = -1
        self._seen_batch: int | None = None
        self._busy = False
        #: wall time spent in the step hook and the final record of :meth:`close` (records
        #: included; not the record at attach): the monitor's own cost during training
        self.hook_seconds = 0.0
        self._handles = [optimizer.register_step_post_hook(self._after_step)]
        if self.batch_size is None:
            self._handles.append(model.register_forward_pre_hook(self._before_forward))
        if record_initial:
            self.record()

    # -- set-up ------------------------------------------------------------------------------

    def _sigma2(self, sigma_w) -> dict[str, float]:
        out = {}
        for la in self.layers:
            if sigma_w is None:
                w = la.matrix(self.params[la.name].detach()).double().cpu().numpy()
                out[la.name] = float(np.mean(eigenvalues(w)))
            else:
                value = sigma_w.get(la.name) if isinstance(sigma_w, Mapping) else sigma_w
                if value is None:
                    raise InputError(f"sigma_w has no value for layer {la.name!r}")
                out[la.name] = check_positive(f"sigma_w[{la.name!r}]", value) ** 2
        return out

    def _attrs(self) -> dict:
        layers = [{**la.to_dict(), "sigma2_reference": self.sigma2[la.name]}
                  for la in self.layers]
        probe = self.probe
        return {
            "format": FORMAT,
            "every": self.every,
            "probe_every": self.probe_every,
            "probe_size": 0 if probe is None else int(probe[0].shape[0]),
            "batch_size": self.batch_size if self.batch_size is not None else "inferred",
            "layers": json.dumps(layers),
            "optimizer": type(self.optimizer).__name__,
            "sgd": json.dumps({str(g): s.to_dict() for g, s in self.sgd.items()}),
            "temperature_definition": "T = lr (1 - dampening) / ((1 - momentum) |B|)",
            "time_definition": "t = sum over steps of lr (1 - dampening) / (1 - momentum)",
            "convention": "paper",
            "ratio_mean_goe": rmt.spacing_ratio_mean("goe"),
            "ratio_mean_poisson": rmt.spacing_ratio_mean("poisson"),
            "heavy_tail": self.heavy_tail,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
        }

    # -- hooks -------------------------------------------------------------------------------

    def _before_forward(self, module, args) -> None:
        if not self._busy and torch.is_grad_enabled() and args and isinstance(args[0],
                                                                               torch.Tensor):
            if args[0].ndim:
                self._seen_batch = int(args[0].shape[0])

    def _after_step(self, optimizer, args, kwargs) -> None:
        start = time.perf_counter()
        self.step += 1
        groups = optimizer.param_groups
        for la in self.layers:
            self.time[la.name] += SGDSettings.from_group(groups[la.group]).effective_lr
        if self.step % self.every == 0:
            self.record()
        self.hook_seconds += time.perf_counter() - start

    # -- recording ---------------------------------------------------------------------------

    @property
    def n_records(self) -> int:
        return len(self._rows) if self.store is None else self.store.n_records

    def record(self, *, probe: bool | None = None) -> None:
        """Record the current state now (the hook calls this every ``every`` steps).

        ``probe``: run the probe (default: when the step is a multiple of ``probe_every``).
        """
        if probe is None:
            probe = self.step % self.probe_every == 0
        self._busy = True
        try:
            with _blas_threads(self._single_blas):
                row = self._measure(probe and self.probe is not None)
        finally:
            self._busy = False
        if self.store is not None:
            self.store.append(row)
        else:
            self._rows.append(row)
        self._last_recorded = self.step

    def _measure(self, probed: bool) -> np.ndarray:
        values: dict = {"step": self.step, "probed": float(probed)}
        grads = {}
        if probed:
            grads, losses = per_sample_gradients(self.model, [la.name for la in self.layers],
                                                 *self.probe, self.loss_fn,
                                                 chunk_size=self.chunk_size)
            values["probe_loss"] = float(losses.double().mean())
        b = self.batch_size if self.batch_size is not None else self._seen_batch
        for la in self.layers:
            p = la.name
            sgd = SGDSettings.from_group(self.optimizer.param_groups[la.group])
            lr = sgd.effective_lr
            temperature = lr / b if b else math.nan
            w = la.matrix(self.params[p].detach()).double().cpu().numpy()
            # eigenvectors only where the probe needs them (eigvalsh is 2-3x faster)
            x, u = eigensystem(w) if probed else (eigenvalues(w), None)
            st = spectrum_statistics(x, la.n_cols)
            values.update({f"{p}__eigenvalues": x, f"{p}__level_spacing": st.level_spacing,
                           f"{p}__ratio_mean": st.ratio_mean, f"{p}__mp_sigma2": st.mp.sigma2,
                           f"{p}__mp_edge": st.mp.edge, f"{p}__mp_ks": st.mp.ks,
                           f"{p}__n_spikes": st.mp.n_spikes, f"{p}__learning_rate": lr,
                           f"{p}__temperature": temperature, f"{p}__time": self.time[p]})
            if self.heavy_tail:
                values.update(zip((f"{p}__{q}" for q in HEAVY_TAIL), heavy_tail_exponent(x),
                                  strict=True))
            if probed:
                g = la.matrix(grads[p]).double().cpu().numpy()
                if sgd.weight_decay:
                    g = g + sgd.weight_decay * w
                terms = probe_terms(la, w, g, u, temperature=temperature, learning_rate=lr,
                                    sigma2=self.sigma2[p])
                values.update({f"{p}__{k}": v for k, v in terms.items()})
        return self.layout.pack(values)

    # -- output and lifetime -----------------------------------------------------------------

    def to_xarray(self):
        """The records so far as an ``xarray.Dataset`` (:mod:`dysonsgd.monitor.store`)."""
        if self.store is not None:
            return open_store(self.store.path)
        rows = np.array(self._rows) if self._rows else np.empty((0, self.layout.size))
        return self.layout.to_xarray(rows, self.attrs)

    def close(self, *, record_final: bool = True) -> None:
        """Remove the hooks; first record the current step (with the probe) if it was not."""
        if not self._handles:
            return
        if record_final and self._last_recorded != self.step:
            start = time.perf_counter()
            self.record(probe=True)
            self.hook_seconds += time.perf_counter() - start
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> SpectrumMonitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(record_final=exc_type is None)
