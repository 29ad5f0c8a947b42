"""Eigenvalue dynamics and phase of any PyTorch model while it trains (the analysis layer).

``spectrum_monitor`` :class:`SpectrumMonitor`, the optimizer-step hook that records; ``layers``
which weights are watched (``nn.Linear`` by default, named parameters, convolutions reshaped)
and the temperature read from ``torch.optim.SGD``; ``spectra`` S (4.5), <r>, the
Marchenko-Pastur fit and spikes of one spectrum; ``probe`` per-sample gradients by
``torch.func`` and K, V (4.4), the complete SDE's terms and (4.15) from them; ``store`` the
incremental Zarr store and its ``xarray`` form; ``summary`` the per-layer numbers of a report;
``lightning`` a Lightning ``Callback`` (when ``lightning`` is installed); ``digits`` the worked
example of docs/monitor.md (an MLP on scikit-learn's handwritten digits).
"""

from dysonsgd.monitor.spectrum_monitor import SpectrumMonitor
from dysonsgd.monitor.store import open_store

__all__ = ["SpectrumMonitor", "open_store"]
