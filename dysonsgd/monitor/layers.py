"""Which weight matrices a monitor watches, and the temperature T = lr/|B| of each.

A monitored layer is one weight parameter seen as a matrix W of shape (N, M) with N <= M, the
convention of :mod:`dysonsgd.measure.moments` (X = W W^T has the N non-trivial eigenvalues):

- ``nn.Linear`` weights are (n_out, n_in) matrices;
- ``nn.Conv1d/2d/3d`` (and any other parameter of >= 2 dimensions) are reshaped to
  (shape[0], prod(shape[1:])), i.e. (out_channels, in_channels/groups * kernel size);
- when the matrix has more rows than columns it is transposed (``transposed=True``): the
  eigenvalues of W^T W are the non-zero eigenvalues of W W^T, and K, V (4.4) are those of
  X = W^T W.

The temperature is read from the optimizer, which must be ``torch.optim.SGD`` (the theory is
that of plain SGD, (2.29)-(2.30)). With heavy-ball momentum mu and dampening d the effective
learning rate lr (1 - d) / (1 - mu) is used: for gradients that change little over the
1/(1 - mu) steps the velocity remembers, the momentum update is a plain SGD step of that size
with the same gradient noise, so T = lr (1 - d) / ((1 - mu) |B|) (the noise scale of Smith and
Le 2018; Nesterov momentum has the same limit). Weight decay lambda adds the deterministic
lambda W to every per-sample gradient (it shifts K, not V).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from dysonsgd._checks import InputError

__all__ = ["MonitoredLayer", "SGDSettings", "select_layers", "sgd_settings"]

#: module types whose weight is monitored by default
DEFAULT_MODULES = (nn.Linear,)


@dataclass(frozen=True)
class MonitoredLayer:
    """One weight parameter seen as the matrix W (N x M, N <= M) of the theory.

    Attributes
    ----------
    name : the parameter's name in ``model.named_parameters()`` (e.g. ``'fc1.weight'``)
    shape : the parameter's own shape
    transposed : W is the transpose of the reshaped parameter (it had more rows than columns)
    n_rows, n_cols : N and M of W
    group : index of the optimizer's param group holding the parameter
    """

    name: str
    shape: tuple[int, ...]
    transposed: bool
    n_rows: int
    n_cols: int
    group: int

    @property
    def ratio(self) -> float:
        """r = N / M of the Marchenko-Pastur law (4.2)."""
        return self.n_rows / self.n_cols

    def matrix(self, tensor: torch.Tensor) -> torch.Tensor:
        """The parameter (or its gradient, shape ``(*lead, *shape)``) as W: ``(*lead, N, M)``."""
        lead = tensor.shape[: tensor.ndim - len(self.shape)]
        w = tensor.reshape(*lead, self.shape[0], -1)
        return w.transpose(-1, -2) if self.transposed else w

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "transposed": self.transposed,
                "n_rows": self.n_rows, "n_cols": self.n_cols, "group": self.group}


def _group_of(optimizer, param) -> int | None:
    for k, group in enumerate(optimizer.param_groups):
        if any(p is param for p in group["params"]):
            return k
    return None


def select_layers(model: nn.Module, optimizer, layers: Sequence[str] | None = None
                  ) -> tuple[MonitoredLayer, ...]:
    """The monitored layers of ``model``: every ``nn.Linear`` weight, or the named ones.

    Parameters
    ----------
    model : torch.nn.Module
    optimizer : the optimizer that trains it (each parameter must be in one of its groups)
    layers : sequence of str, optional
        Parameter names (``'fc1.weight'``) or module names (``'fc1'``, meaning its
        ``weight``); any parameter of >= 2 dimensions (convolution kernels are reshaped).
        By default every ``nn.Linear`` weight with at least 2 rows and 2 columns (a layer
        with one output, say, has a single eigenvalue and no level spacing).

    Raises
    ------
    InputError
        ``model`` has no matching layer, a name is unknown or not a matrix, a parameter is
        not trained by ``optimizer`` or is a 1 x 1 matrix (no spectrum).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    params = dict(model.named_parameters())
    if layers is None:
        # a weight tied between modules is listed once, under the name named_parameters gives
        names = [f"{m}.weight" if m else "weight" for m, mod in model.named_modules()
                 if isinstance(mod, DEFAULT_MODULES) and isinstance(
                     getattr(mod, "weight", None), nn.Parameter)]
        names = [n for n in names if n in params]
        if not names:
            raise InputError("model has no nn.Linear layer to monitor: pass layers=[parameter "
                             f"names], e.g. among {sorted(params)[:6]}")
    else:
        if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
            raise InputError(f"layers must be a non-empty list of parameter or module names, "
                             f"got {layers!r}")
        names = []
        for name in layers:
            key = name if name in params else f"{name}.weight"
            if key not in params:
                raise InputError(f"layers: {name!r} is neither a parameter nor a module with a "
                                 f"weight of the model (parameters: {sorted(params)[:8]} ...)")
            names.append(key)
        if len(set(names)) != len(names):
            raise InputError(f"layers names a parameter twice: {list(layers)!r}")
    if layers is None:  # by default a layer with one output or input (no spacing) is skipped
        names = [n for n in names if min(params[n].shape[0], math.prod(params[n].shape[1:])) > 1]
        if not names:
            raise InputError("model has no nn.Linear layer with at least 2 inputs and 2 outputs "
                             "to monitor: pass layers=[parameter names]")
    out = []
    for name in names:
        p = params[name]
        if p.ndim < 2:
            raise InputError(f"layers: {name!r} has shape {tuple(p.shape)}, not a matrix")
        rows, cols = p.shape[0], math.prod(p.shape[1:])
        transposed = rows > cols
        n, m = (cols, rows) if transposed else (rows, cols)
        if n < 2:
            raise InputError(f"layers: {name!r} is a {rows} x {cols} matrix; X = W W^T has "
                             f"{n} eigenvalue(s), and level spacings need at least 2")
        group = _group_of(optimizer, p)
        if group is None:
            raise InputError(f"optimizer does not train {name!r}: its temperature lr/|B| is "
                             "undefined (select layers the optimizer updates)")
        if not p.requires_grad:
            raise InputError(f"layers: {name!r} does not require grad")
        out.append(MonitoredLayer(name, tuple(p.shape), transposed, n, m, group))
    return tuple(out)


@dataclass(frozen=True)
class SGDSettings:
    """What the monitor takes from one param group of ``torch.optim.SGD``.

    ``effective_lr`` = lr (1 - dampening) / (1 - momentum) (lr itself without momentum); the
    temperature is ``effective_lr / |B|``.
    """

    lr: float
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float

    @property
    def effective_lr(self) -> float:
        if self.momentum == 0.0:
            return self.lr
        return self.lr * (1.0 - self.dampening) / (1.0 - self.momentum)

    @classmethod
    def from_group(cls, group: dict) -> SGDSettings:
        """The settings of a param group as they are (unchecked: :func:`sgd_settings` checks)."""
        momentum = float(group.get("momentum", 0.0))
        return cls(float(group["lr"]), momentum,
                   float(group.get("dampening", 0.0)) if momentum else 0.0,
                   bool(group.get("nesterov", False)), float(group.get("weight_decay", 0.0)))

    def to_dict(self) -> dict:
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "nesterov": self.nesterov, "weight_decay": self.weight_decay,
                "effective_lr": self.effective_lr}


def sgd_settings(optimizer, group: int) -> SGDSettings:
    """Read lr, momentum, dampening and weight decay of one param group of an SGD optimizer.

    Raises
    ------
    InputError
        ``optimizer`` is not ``torch.optim.SGD`` (Adam, RMSprop, ... precondition the gradient,
        so no single temperature lr/|B| describes their noise), maximises, or has a learning
        rate or momentum outside the range where T is defined.
    """
    if not isinstance(optimizer, torch.optim.SGD):
        raise InputError(
            f"optimizer must be torch.optim.SGD (T = lr/|B| is the temperature of plain SGD); "
            f"got {type(optimizer).__name__}, whose update is not lr times the minibatch "
            "gradient, so no temperature lr/|B| can be read from it")
    g = optimizer.param_groups[group]
    if g.get("maximize", False):
        raise InputError("optimizer: maximize=True is not gradient descent on the loss")
    lr = float(g["lr"])
    momentum = float(g.get("momentum", 0.0))
    dampening = float(g.get("dampening", 0.0))
    if not (math.isfinite(lr) and lr > 0):
        raise InputError(f"optimizer: lr must be > 0 for a temperature lr/|B|, got {lr!r}")
    if not 0.0 <= momentum < 1.0:
        raise InputError(f"optimizer: momentum must lie in [0, 1), got {momentum!r}")
    if momentum > 0 and not 0.0 <= dampening < 1.0:
        raise InputError(f"optimizer: dampening must lie in [0, 1) with momentum, got "
                         f"{dampening!r}")
    return SGDSettings.from_group(g)
