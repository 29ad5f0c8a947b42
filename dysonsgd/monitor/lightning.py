"""A Lightning ``Callback`` around :class:`SpectrumMonitor`, defined when ``lightning`` imports.

    trainer = lightning.Trainer(callbacks=[SpectrumCallback(every=100, probe=(x, y),
                                                            loss_fn=loss_fn, store="run.zarr")])

The monitor attaches to the first optimizer of the trainer at the start of training (it must
be ``torch.optim.SGD``) and closes at its end; ``callback.monitor`` is the
:class:`SpectrumMonitor`. Lightning is an optional extra, never a core dependency: without it
this module defines ``LIGHTNING_AVAILABLE = False`` and no callback.
"""

from __future__ import annotations

from dysonsgd.monitor.spectrum_monitor import SpectrumMonitor

__all__ = ["LIGHTNING_AVAILABLE"]

try:
    import lightning.pytorch as _pl
except ImportError:  # the optional extra is not installed
    _pl = None

LIGHTNING_AVAILABLE = _pl is not None

if _pl is not None:
    __all__ += ["SpectrumCallback"]

    class SpectrumCallback(_pl.Callback):
        """Run a :class:`SpectrumMonitor` over ``trainer.fit`` (keywords as the monitor's)."""

        def __init__(self, **monitor_kwargs) -> None:
            super().__init__()
            self.monitor_kwargs = monitor_kwargs
            self.monitor: SpectrumMonitor | None = None

        def on_train_start(self, trainer, pl_module) -> None:
            self.monitor = SpectrumMonitor(pl_module, trainer.optimizers[0],
                                           **self.monitor_kwargs)

        def on_train_end(self, trainer, pl_module) -> None:
            if self.monitor is not None:
                self.monitor.close()
