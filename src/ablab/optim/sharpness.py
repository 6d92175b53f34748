"""Sharpness of a trained model: SAM's ascent-step sharpness and the Hessian's top eigenvalue.

Both are measured in eval mode: train-mode BatchNorm would update running statistics and
normalise with batch statistics, dropout would draw noise; eval mode is deterministic, touches
no buffer, and measures the function used at inference. Both leave the model bitwise unchanged
(parameters, buffers, ``.grad``, each module's train/eval flag). One host read per batch and
per power iteration (analysis, not the training hot path).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional, Sequence

import torch
from torch import nn

from ablab.optim.sam import sam_perturbation

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; each module's own flag restored afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def sam_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Batch],
    rho: float,
    adaptive: bool = False,
    eta: float = 0.01,
) -> float:
    """Mean over batches of L(w + e(w)) − L(w), e = ρ T² ∇L / ‖T ∇L‖₂ per batch.

    The first-order solution of max_{‖T⁻¹ε‖≤ρ} L(w + ε) − L(w) (Foret et al. 2021 eq. 2;
    ASAM, Kwon et al. 2021: T = |w| + η when ``adaptive``). Eval mode; model restored bitwise.
    """
    params = _trainable(model)
    clean = [p.detach().clone() for p in params]
    total, count = None, 0
    with _eval_mode(model):
        try:
            for x, y in batches:
                loss = loss_fn(model(x), y)
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                used = [(p, g) for p, g in zip(params, grads) if g is not None]
                step = sam_perturbation([p for p, _ in used], [g for _, g in used], rho, adaptive, eta)
                with torch.no_grad():
                    for (p, _), e in zip(used, step):
                        p.add_(e)
                    gap = (loss_fn(model(x), y) - loss.detach()).double()
                    for p, w in zip(params, clean):
                        p.copy_(w)
                total = gap if total is None else total + gap
                count += 1
        finally:
            with torch.no_grad():
                for p, w in zip(params, clean):
                    p.copy_(w)
    if count == 0:
        raise ValueError("sam_sharpness needs at least one batch")
    return (total / count).item()


def _hessian_vector_product(
    model: nn.Module, loss_fn: LossFn, batches: Sequence[Batch], params: list, v: list
) -> list[torch.Tensor]:
    """H v of the loss averaged over batches: mean_b ∇(∇L_b · v) (double backward, graph per batch)."""
    out = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        dot = sum((g * u).sum() for g, u in zip(grads, v) if g is not None)
        if not torch.is_tensor(dot) or not dot.requires_grad:
            continue  # the loss is linear in every parameter: H = 0 on this batch
        hv = torch.autograd.grad(dot, params, allow_unused=True)
        for acc, h in zip(out, hv):
            if h is not None:
                acc.add_(h.detach())
    return [h / len(batches) for h in out]


def _norm(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in vectors]))


def hessian_top_eigenvalue(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Batch],
    iters: int = 20,
    tol: float = 1e-4,
    generator: Optional[torch.Generator] = None,
) -> float:
    """The dominant eigenvalue of ∇²L (loss averaged over batches), by power iteration on H v.

    v₀ ~ N(0, I) from ``generator`` (a fixed seed 0 when None), v ← Hv/‖Hv‖, λ = vᵀHv;
    stops after ``iters`` products or when |λ_k − λ_{k−1}| ≤ tol·|λ_k|. The dominant
    eigenvalue is the largest in magnitude (as in PyHessian, Yao et al. 2020). Eval mode.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("hessian_top_eigenvalue needs at least one batch")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    params = _trainable(model)
    v = [
        torch.randn(p.shape, generator=generator, device=generator.device, dtype=p.dtype).to(p.device)
        for p in params
    ]
    norm = _norm(v)
    v = [t / norm for t in v]
    eigenvalue: Optional[float] = None
    with _eval_mode(model):
        for _ in range(iters):
            hv = _hessian_vector_product(model, loss_fn, batches, params, v)
            current = sum((h * u).sum() for h, u in zip(hv, v)).item()
            norm = _norm(hv)
            if norm.item() == 0.0:
                return 0.0
            v = [h / norm for h in hv]
            converged = eigenvalue is not None and abs(current - eigenvalue) <= tol * abs(current)
            eigenvalue = current
            if converged:
                break
    return float(eigenvalue)
