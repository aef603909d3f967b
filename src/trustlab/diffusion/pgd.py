"""L-infinity projected sign-gradient descent on images in [0, 1] (Madry et al., ICLR 2018).

One loop serves every attack of the diffusion systems so that budgets, clipping and step rules are
identical across methods; only the objective differs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def project_linf(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """Project ``x_adv`` onto ``{x' : ||x' - x||_inf <= eps, 0 <= x' <= 1}``."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def quantize_toward(x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> torch.Tensor:
    """Round ``x_adv`` to the 8-bit grid *toward* ``x`` so the saved file keeps ``||delta||_inf <= eps``.

    ``x`` is assumed to lie on the 8-bit grid (a decoded image); plain rounding can overshoot the
    budget by half a level (measured 16.5/255 at eps = 16/255), rounding toward ``x`` cannot.
    """
    levels = x_adv * 255.0
    ref = torch.round(x * 255.0)
    q = torch.where(levels >= ref, torch.floor(levels + 1e-6), torch.ceil(levels - 1e-6))
    budget = torch.floor(torch.tensor(eps * 255.0 + 1e-6))
    q = torch.min(torch.max(q, ref - budget), ref + budget).clamp(0, 255)
    return q / 255.0


def linf_pgd(
    x: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, int], torch.Tensor] | None,
    eps: float,
    alpha: float | Callable[[int], float],
    steps: int,
    maximize: bool,
    random_start: bool = False,
    generator: torch.Generator | None = None,
    grad_fn: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    score_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Sign-PGD under an L-infinity budget; returns the last iterate (as the official PCA code does).

    Args:
        x: Clean images ``(N, C, H, W)`` in [0, 1].
        loss_fn: ``loss_fn(x_adv, step) -> scalar`` (sum or mean over the batch).
        eps: Budget in [0, 1] pixel units.
        alpha: Step size, or a function ``step -> step size`` (e.g. PhotoGuard's linear decay).
        steps: Number of iterations.
        maximize: Ascend on the loss when True, descend otherwise.
        random_start: Start from uniform noise in the eps-ball instead of from ``x``.
        generator: Generator of the random start.
        grad_fn: ``grad_fn(x_adv, step) -> d loss / d x_adv`` used instead of ``loss_fn`` (e.g. a tiled
            encoder whose gradient is accumulated tile by tile).
        score_fn: Per-image objective ``(N,)`` (same direction as the loss). When given, the best iterate
            per image (the start and every step's iterate) is returned instead of the last one.
    """
    if eps < 0 or steps < 0:
        raise ValueError(f"eps and steps must be non-negative, got eps={eps}, steps={steps}")
    if (loss_fn is None) == (grad_fn is None):
        raise ValueError("pass exactly one of loss_fn and grad_fn")
    x = x.detach()
    if random_start:
        noise = (torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
                 .to(x.device) * 2 - 1) * eps
        x_adv = project_linf(x, x + noise, eps)
    else:
        x_adv = x.clone()
    sign = 1.0 if maximize else -1.0
    best = best_score = None
    if score_fn is not None:
        with torch.no_grad():
            best, best_score = x_adv.clone(), score_fn(x_adv)
    for step in range(steps):
        if grad_fn is not None:
            grad = grad_fn(x_adv, step)
        else:
            x_adv.requires_grad_(True)
            loss = loss_fn(x_adv, step)  # type: ignore[misc]
            (grad,) = torch.autograd.grad(loss, x_adv)
        a = alpha(step) if callable(alpha) else alpha
        with torch.no_grad():
            x_adv = project_linf(x, x_adv.detach() + sign * a * grad.sign(), eps)
            if score_fn is not None:
                cur = score_fn(x_adv)
                better = cur > best_score if maximize else cur < best_score
                best = torch.where(better.view(-1, *([1] * (x.dim() - 1))), x_adv, best)
                best_score = torch.where(better, cur, best_score)
    return (best if best is not None else x_adv).detach()
