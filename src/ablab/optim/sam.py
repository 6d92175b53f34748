"""Sharpness-aware minimization: SAM (Foret et al. 2021) and ASAM (Kwon et al. 2021).

One SAM step is two forward/backward passes around a base optimizer:

    g   = ∇L(w)                               1st pass, at the clean weights
    e   = ρ · T² g / ‖T g‖₂                   ``first_step``: ascend to w + e
    g'  = ∇L(w + e)                           2nd pass, at the perturbed weights
    w   ← base_step(w, g')                    ``second_step``: back to w, then the base step

T = I is SAM (Foret et al. 2021, eq. 2 with p = 2: ε̂(w) = ρ ∇L / ‖∇L‖₂); T = diag(|w| + η) is
element-wise ASAM (Kwon et al. 2021, ICML, eq. for ε_t in Algorithm 1 with the operator
T_w = |w| + η of their Sec. 4, η = 0.01). The official code (SamsungLabs/ASAM, ``asam.py``)
applies T only to parameters whose name contains "weight"; the others (biases, norm β) keep
T = 1 but stay inside the one global norm ‖T g‖. ``SAM(..., unscaled=asam_unscaled_params(model,
"weights"))`` reproduces it (to float rounding: it adds 1e-16 to the norm, ablab 1e-12, and it
returns by subtracting e, ablab by restoring w); ``"all"`` scales every parameter.

What belongs to the optimizer and what to the caller (pitfalls of peer implementations):

- **Weight decay** is applied once, by the base optimizer's step (or outside it, see
  ``ablab.optim.groups``); the ascent direction contains it only when it is part of the loss
  (an L2 penalty, as in Google's SAM), not when it is the optimizer's ``weight_decay`` (as in
  davda54/sam). Record which.
- **The gradient norm** is one global norm over all parameters, accumulated in float32 (float64
  for float64 parameters) on the first parameter's device, with no host synchronisation.
- **BatchNorm**: run the 2nd pass inside ``bn_running_stats_frozen(model)`` so running
  statistics are updated by the clean pass only; the model stays in train mode.
- **Clipping** belongs before ``second_step`` (it is a no-op before ``first_step``: the
  gradient is normalised). **DDP**: wrap the 1st pass in ``model.no_sync()`` (m-sharpness).
- **Schedules**: ``param_groups`` *is* the base optimizer's list, so ``g["lr"] = …`` on either
  acts on the base; attach ``torch.optim.lr_scheduler`` objects to ``sam.base_optimizer``.
- **Restoring** w copies the clean weights saved by ``first_step`` (exact), rather than
  subtracting e ((w + e) − e ≠ w in floating point; the error would accumulate over steps).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Literal, Optional, Sequence

import torch
from torch import nn

_EPS = 1e-12  # added to ‖T g‖: a zero gradient gives e = 0, not NaN
_SAM_KEYS = ("rho", "adaptive", "eta")


def _accumulation_dtype(tensors: Sequence[torch.Tensor]) -> torch.dtype:
    """float32, or float64 when any tensor is float64."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _perturbations(
    weights: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    settings: Sequence[tuple[float, bool, float]],
) -> list[torch.Tensor]:
    """e_i = ρ_i T_i² g_i / ‖T g‖₂ with T_i = |w_i| + η_i (adaptive) or 1; one global norm."""
    if not weights:
        return []
    dtype = _accumulation_dtype(list(grads))
    device = weights[0].device
    scaled, norms = [], []
    for w, g, (_, adaptive, eta) in zip(weights, grads, settings):
        t = w.detach().abs().to(dtype).add_(eta) if adaptive else None
        tg = g.to(dtype) * t if adaptive else g.to(dtype)
        scaled.append((t, tg))
        norms.append(torch.linalg.vector_norm(tg).to(device))
    inv_norm = 1.0 / (torch.linalg.vector_norm(torch.stack(norms)) + _EPS)
    out = []
    for w, (t, tg), (rho, _, _) in zip(weights, scaled, settings):
        t2g = tg * t if t is not None else tg  # T² g = T (T g)
        out.append((t2g * (rho * inv_norm.to(w.device))).to(w.dtype))
    return out


def perturbations(
    weights: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    settings: Sequence[tuple[float, bool, float]],
) -> list[torch.Tensor]:
    """``SAM.first_step``'s ascent steps: each parameter with its own (ρ, adaptive, η), one global norm."""
    return _perturbations(list(weights), list(grads), list(settings))


def sam_perturbation(
    weights: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    rho: float,
    adaptive: bool = False,
    eta: float = 0.01,
) -> list[torch.Tensor]:
    """The ascent step e(w) = ρ · T² ∇L / ‖T ∇L‖₂ (Foret et al. 2021 eq. 2; ASAM: T = |w| + η)."""
    return _perturbations(list(weights), list(grads), [(rho, adaptive, eta)] * len(weights))


class SAM(torch.optim.Optimizer):
    """SAM/ASAM around any base optimizer; ``param_groups`` are shared with the base.

    ε̂(w) = ρ T² g / ‖T g‖₂, T = I (SAM, Foret et al. 2021 eq. 2) or |w| + η (ASAM, Kwon et al.
    2021). ``rho``, ``adaptive`` and ``eta`` are defaults of every group (set per group on
    ``sam.param_groups`` after construction); the norm is global over all groups. ``unscaled``:
    parameters whose T is 1 even when adaptive (the official ASAM's biases and norm β, see
    ``asam_unscaled_params``); they still count in the global norm.

    Engine use (the caller owns the passes)::

        loss(model(x)).backward();  sam.first_step()
        with bn_running_stats_frozen(model):
            loss(model(x)).backward()
        sam.second_step()

    ``state_dict()`` holds the base optimizer's state (SAM's settings are in its groups); the
    saved clean weights are transient and not included: save between whole steps.
    """

    def __init__(
        self,
        params: Iterable,
        base_optimizer: torch.optim.Optimizer,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.01,
        unscaled: Iterable[nn.Parameter] = (),
    ):
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.base_optimizer = base_optimizer
        self._shared = False
        super().__init__(params, dict(rho=rho, adaptive=adaptive, eta=eta))
        given = {id(p) for g in self.param_groups for p in g["params"]}
        held = {id(p) for g in base_optimizer.param_groups for p in g["params"]}
        if given != held:
            raise ValueError("SAM's params must be exactly the parameters of its base optimizer")
        self._unscaled = {id(p) for p in unscaled}
        if not self._unscaled <= given:
            raise ValueError("SAM's unscaled parameters must be among its params")
        self._link_groups()
        self._perturbed: Optional[list[torch.Tensor]] = None

    def _link_groups(self) -> None:
        self.param_groups = self.base_optimizer.param_groups
        for group in self.param_groups:
            for key in _SAM_KEYS:
                group.setdefault(key, self.defaults[key])
        self._shared = True

    def add_param_group(self, param_group: dict) -> None:
        """Add a group to the base optimizer (and so to SAM), with SAM's defaults filled in."""
        if not self._shared:  # during Optimizer.__init__: SAM's own groups, replaced by the base's
            return super().add_param_group(param_group)
        self.base_optimizer.add_param_group(param_group)
        for key in _SAM_KEYS:
            self.param_groups[-1].setdefault(key, self.defaults[key])

    @torch.no_grad()
    def first_step(self) -> None:
        """Save w, move to w + e(w) using the current gradients, then set the gradients to None."""
        if self._perturbed is not None:
            raise RuntimeError("first_step() called twice without second_step()")
        weights, grads, settings = [], [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    weights.append(p)
                    grads.append(p.grad)
                    adaptive = group["adaptive"] and id(p) not in self._unscaled
                    settings.append((group["rho"], adaptive, group["eta"]))
        for p, e in zip(weights, _perturbations(weights, grads, settings)):
            state = self.state[p]
            clean = state.get("clean")
            if clean is None or clean.shape != p.shape or clean.dtype != p.dtype:
                state["clean"] = p.detach().clone()
            else:
                clean.copy_(p)  # reuse the buffer: one copy of the weights, allocated once
            p.add_(e)
        self._perturbed = weights
        self.zero_grad(set_to_none=True)

    @torch.no_grad()
    def unperturb(self) -> None:
        """Restore the clean weights w saved by ``first_step`` (bitwise)."""
        if self._perturbed is None:
            raise RuntimeError("unperturb()/second_step() needs a first_step() first")
        for p in self._perturbed:
            p.copy_(self.state[p]["clean"])
        self._perturbed = None

    def second_step(self) -> None:
        """Back to w, then the base optimizer's step with the gradient taken at w + e."""
        self.unperturb()
        self.base_optimizer.step()

    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> torch.Tensor:
        """Both passes: ``closure`` computes the loss and calls backward; returns the clean loss.

        Gradients are set to None before the first call. BatchNorm running statistics are
        updated by both calls; use first_step/second_step with ``bn_running_stats_frozen`` to
        update them once.
        """
        if closure is None:
            raise ValueError("SAM.step needs a closure that computes the loss and calls backward()")
        self.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict:
        """The base optimizer's state dict (its groups carry rho, adaptive and eta)."""
        if self._perturbed is not None:
            raise RuntimeError("state_dict() between first_step() and second_step(): save between steps")
        return {"base_optimizer": self.base_optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the base optimizer's state and re-link the shared ``param_groups``."""
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        self._link_groups()  # torch's load_state_dict builds new group dicts (davda54/sam#34)
        self.state.clear()
        self._perturbed = None


def asam_unscaled_params(model: nn.Module, adaptive_params: Literal["weights", "all"] = "weights") -> list[nn.Parameter]:
    """The parameters ASAM leaves unscaled (T = 1): "weights" as the official code, "all" none.

    "weights" (SamsungLabs/ASAM): every parameter whose name does not contain "weight", i.e.
    biases and norm β (γ is a norm layer's ``weight``, so it is scaled); "all": [].
    """
    if adaptive_params == "all":
        return []
    if adaptive_params != "weights":
        raise ValueError(f"adaptive_params must be 'weights' or 'all', got {adaptive_params!r}")
    return [p for name, p in model.named_parameters() if "weight" not in name]


def _is_stat_buffer(name: str) -> bool:
    return name.startswith("running_") or name == "num_batches_tracked"


@contextmanager
def bn_running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every BatchNorm-like module's running statistics unchanged.

    For every module holding ``running_*``/``num_batches_tracked`` buffers: ``momentum`` (when
    it has one) is set to 0.0, so ``F.batch_norm`` computes ``(1 − 0)·running + 0·batch`` and
    leaves the statistics as they were (also for ``momentum=None``, PyTorch's cumulative
    average); the buffers are also snapshotted and copied back on exit, because momentum 0 does
    not stop ``_BatchNorm.forward`` from incrementing ``num_batches_tracked``, and so that
    modules with another update rule, or a non-finite batch (0·NaN = NaN), are exact too. The
    model stays in train mode: batch statistics still normalise, unlike ``.eval()`` on SAM's
    2nd pass, which changes the function and hurt convergence (davda54/sam#30).
    Unlike davda54/sam's ``disable_running_stats`` (momentum 0 only), ``num_batches_tracked``
    is restored too: there it counts both passes, 2 per SAM step, and with ``momentum=None``
    its "cumulative" average takes step k's clean batch with factor 1/(2k − 1), not 1/k.
    Changing ``momentum`` retriggers guards of a ``torch.compile``d model.
    """
    saved = []
    for module in model.modules():
        stats = {n: b for n, b in module.named_buffers(recurse=False) if b is not None and _is_stat_buffer(n)}
        if not stats:
            continue
        has_momentum = hasattr(module, "momentum") and (
            module.momentum is None or isinstance(module.momentum, (int, float))
        )
        momentum = module.momentum if has_momentum else None
        saved.append((module, has_momentum, momentum, {n: b.detach().clone() for n, b in stats.items()}))
        if has_momentum:
            module.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for module, has_momentum, momentum, snapshot in saved:
                if has_momentum:
                    module.momentum = momentum
                for name, value in snapshot.items():
                    getattr(module, name).copy_(value)
