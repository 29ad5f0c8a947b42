"""The worked example of docs/monitor.md: an MLP on the handwritten digits of scikit-learn.

``sklearn.datasets.load_digits`` ships with scikit-learn (1797 images of 8 x 8 pixels, ten
classes; nothing is downloaded). :func:`train_digits` trains the MLP 64 -> 64 -> 32 -> 10
(tanh, cross-entropy) with plain ``torch.optim.SGD`` in a plain loop, optionally under a
:class:`~dysonsgd.monitor.SpectrumMonitor` on all three ``nn.Linear`` layers, so that the
tests, the overhead benchmark and the documentation run the same code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dysonsgd._checks import InputError, check_int, check_positive
from dysonsgd.monitor.spectrum_monitor import SpectrumMonitor

__all__ = ["DigitsMLP", "DigitsRun", "digits_data", "train_digits"]

#: points of the fixed test split
N_TEST = 297


def digits_data(*, seed: int = 0, dtype=torch.float32):
    """Digits as tensors: pixels / 16 centred by the training mean, a fixed random split.

    Returns
    -------
    x_train (1500, 64), y_train (1500,) int64, x_test (297, 64), y_test (297,)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # an optional dependency of the example only
        raise InputError("the digits example needs scikit-learn (pip install scikit-learn)"
                         ) from exc
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x = data.data[order] / 16.0
    y = data.target[order]
    x_train, x_test = x[N_TEST:], x[:N_TEST]
    mean = x_train.mean(axis=0)
    return (torch.tensor(x_train - mean, dtype=dtype), torch.tensor(y[N_TEST:]),
            torch.tensor(x_test - mean, dtype=dtype), torch.tensor(y[:N_TEST]))


class DigitsMLP(nn.Module):
    """64 -> 64 -> 32 -> 10 with tanh: fc1 (64, 64), fc2 (32, 64), fc3 (10, 32)."""

    def __init__(self, widths=(64, 64, 32, 10)) -> None:
        super().__init__()
        self.fc1 = nn.Linear(widths[0], widths[1])
        self.fc2 = nn.Linear(widths[1], widths[2])
        self.fc3 = nn.Linear(widths[2], widths[3])

    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


@dataclass
class DigitsRun:
    """A trained digits MLP: the model, the epoch-mean training losses, the test accuracy,
    the monitor's records (None without a monitor), the wall and CPU time of the loop (s;
    the CPU time of all threads of the process, less sensitive to the load of a shared host)
    and the time spent in the monitor's step hook (its own cost; 0 without a monitor)."""

    model: DigitsMLP
    losses: np.ndarray
    test_accuracy: float
    records: object
    wall_time: float
    cpu_time: float
    hook_time: float = 0.0


def train_digits(learning_rate: float, *, batch_size: int = 16, epochs: int = 20,
                 seed: int = 0, monitor: bool = True, every: int = 100,
                 probe_size: int | None = 256, probe_every: int | None = None, store=None,
                 dtype=torch.float32) -> DigitsRun:
    """Train :class:`DigitsMLP` with plain SGD at T = lr / |B|, monitored or not.

    Parameters
    ----------
    learning_rate : lr of ``torch.optim.SGD`` (no momentum)
    batch_size : |B|; an epoch is floor(1500 / |B|) steps over a fresh permutation
    epochs : int
    seed : the initial weights (``torch.manual_seed``), the data order (its own generator)
    monitor : attach a :class:`SpectrumMonitor` to all three layers
    every, probe_every, store : as the monitor's
    probe_size : the first ``probe_size`` training points are the probe (None: no probe)
    dtype : torch dtype of the model and data

    Returns
    -------
    DigitsRun
    """
    lr = check_positive("learning_rate", learning_rate)
    b = check_int("batch_size", batch_size)
    epochs = check_int("epochs", epochs)
    x, y, x_test, y_test = digits_data(seed=seed, dtype=dtype)
    if probe_size is not None and not 2 <= probe_size <= len(y):
        raise InputError(f"probe_size must lie in [2, {len(y)}], got {probe_size}")
    torch.manual_seed(seed)
    model = DigitsMLP().to(dtype)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)
    mon = None
    if monitor:
        probe = None if probe_size is None else (x[:probe_size], y[:probe_size])
        mon = SpectrumMonitor(model, opt, every=every, probe=probe,
                              loss_fn=None if probe is None else loss_fn, store=store,
                              batch_size=b, probe_every=probe_every)
    steps = len(y) // b
    losses = np.empty(epochs)
    start, cpu = time.perf_counter(), time.process_time()
    for e in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        total = 0.0
        for s in range(steps):
            idx = perm[s * b:(s + 1) * b]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        losses[e] = total / steps
    if mon is not None:
        mon.close()  # records the last step: part of the monitor's cost
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    records = None if mon is None else mon.to_xarray()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(-1) == y_test).double().mean())
    hook = 0.0 if mon is None else mon.hook_seconds
    return DigitsRun(model, losses, accuracy, records, wall, cpu, hook)
