"""A small Conv-TasNet with per-block hidden widths, channel masks and physical channel pruning.

Luo & Mesgarani, *Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for Speech
Separation*, IEEE/ACM TASLP 2019 (arXiv:1809.07454). Non-causal variant: learned encoder
(N filters of length L, 50 % hop), global layer norm + 1x1 bottleneck to B channels, R repeats of X
dilated 1-D conv blocks (1x1 B->H, PReLU, gLN, depthwise conv of size P, PReLU, gLN, 1x1 H->B for
the residual and for the skip path), a sigmoid mask per source and a transposed-conv decoder.

Pruning support (SepPrune, arXiv:2505.12079): the prunable channel groups are the H hidden channels
of each TCN block (``blocks.<i>.hidden``); the block widths are free constructor arguments, so a
pruned model is an ordinary :class:`ConvTasNet` with smaller ``hidden``.

**Masked == pruned, exactly.** A hard 0/1 channel mask ``m`` is applied after every per-channel
operation of a block, and the global layer norm computes its statistics over the *kept* channels
only (:func:`masked_gln`). Hence the masked dense model computes exactly what the physically pruned
model computes (the test suite checks it). The original code's masked gLN averages over all H
channels instead, so its masked model differs from its pruned one (see the system README).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ARCH = "conv_tasnet"


def masked_gln(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, mask: torch.Tensor | None = None, eps: float = 1e-8
) -> torch.Tensor:
    """Global layer norm over (channels, time) of ``x`` ``[B, C, T]``, restricted to kept channels.

    Args:
        x: Input ``[B, C, T]``.
        gamma: Scale ``[C]``.
        beta: Shift ``[C]``.
        mask: Optional 0/1 channel mask ``[C]`` (may carry straight-through gradients). Statistics are
            taken over channels with ``mask = 1`` only and masked channels are zeroed on output, so the
            result equals the plain gLN of the physically pruned tensor.
        eps: Variance floor.

    Returns:
        Normalized ``[B, C, T]``.
    """
    if mask is None:
        mean = x.mean(dim=(1, 2), keepdim=True)
        var = (x * x).mean(dim=(1, 2), keepdim=True) - mean * mean
    else:
        m = mask[None, :, None]
        count = mask.sum().clamp_min(1.0) * x.shape[-1]
        xm = x * m
        mean = xm.sum(dim=(1, 2), keepdim=True) / count
        var = (xm * x).sum(dim=(1, 2), keepdim=True) / count - mean * mean
    scale = torch.rsqrt(var.clamp_min(0) + eps) * gamma[:, None]  # [B, C, 1]
    y = torch.addcmul(beta[:, None] - mean * scale, x, scale)
    return y if mask is None else y * mask[None, :, None]


class GlobalLayerNorm(nn.Module):
    """gLN of Conv-TasNet with an optional channel mask (see :func:`masked_gln`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return masked_gln(x, self.gamma, self.beta, mask)


class TCNBlock(nn.Module):
    """One dilated 1-D conv block: 1x1 (B->H), PReLU, gLN, depthwise (H, P, d), PReLU, gLN, 1x1 (H->B) x2.

    Args:
        bn_chan: B, bottleneck channels.
        hid_chan: H, hidden channels (the prunable group).
        kernel_size: P.
        dilation: Dilation of the depthwise conv.
    """

    def __init__(self, bn_chan: int, hid_chan: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.in_conv = nn.Conv1d(bn_chan, hid_chan, 1)
        self.act1 = nn.PReLU()
        self.norm1 = GlobalLayerNorm(hid_chan)
        pad = (kernel_size - 1) * dilation // 2
        self.dconv = nn.Conv1d(hid_chan, hid_chan, kernel_size, dilation=dilation, padding=pad, groups=hid_chan)
        self.act2 = nn.PReLU()
        self.norm2 = GlobalLayerNorm(hid_chan)
        self.res_conv = nn.Conv1d(hid_chan, bn_chan, 1)
        self.skip_conv = nn.Conv1d(hid_chan, bn_chan, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.in_conv(x)
        if mask is not None:
            h = h * mask[None, :, None]
        h = self.norm1(self.act1(h), mask)
        h = self.dconv(h)
        if mask is not None:
            h = h * mask[None, :, None]
        h = self.norm2(self.act2(h), mask)
        return self.res_conv(h), self.skip_conv(h)


class ConvTasNet(nn.Module):
    """Conv-TasNet (non-causal, gLN) with per-block hidden widths.

    Args:
        n_src: Number of sources.
        n_filters: N, encoder filters.
        kernel_size: L, encoder filter length (hop L/2).
        bn_chan: B, bottleneck channels.
        hid_chan: H, hidden channels of every block (when ``hidden`` is not given).
        conv_kernel_size: P, depthwise kernel size.
        n_blocks: X, blocks per repeat (dilations 1, 2, ..., 2^(X-1)).
        n_repeats: R, repeats.
        hidden: Optional explicit widths of the X*R blocks (a pruned architecture).
    """

    def __init__(
        self,
        n_src: int = 2,
        n_filters: int = 64,
        kernel_size: int = 16,
        bn_chan: int = 48,
        hid_chan: int = 96,
        conv_kernel_size: int = 3,
        n_blocks: int = 4,
        n_repeats: int = 2,
        hidden: list[int] | None = None,
    ) -> None:
        super().__init__()
        for name, v in [("n_src", n_src), ("n_filters", n_filters), ("bn_chan", bn_chan), ("hid_chan", hid_chan),
                        ("n_blocks", n_blocks), ("n_repeats", n_repeats)]:
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if kernel_size < 2 or kernel_size % 2:
            raise ValueError(f"kernel_size must be an even number >= 2 (hop = L/2), got {kernel_size}")
        if conv_kernel_size < 1 or conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd, got {conv_kernel_size}")
        n_total = n_blocks * n_repeats
        hidden = list(hidden) if hidden is not None else [hid_chan] * n_total
        if len(hidden) != n_total or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must list {n_total} positive widths, got {hidden}")
        self.config = {"n_src": n_src, "n_filters": n_filters, "kernel_size": kernel_size, "bn_chan": bn_chan,
                       "hid_chan": hid_chan, "conv_kernel_size": conv_kernel_size, "n_blocks": n_blocks,
                       "n_repeats": n_repeats, "hidden": [int(h) for h in hidden]}
        self.n_src, self.n_filters, self.kernel_size = n_src, n_filters, kernel_size
        self.encoder = nn.Conv1d(1, n_filters, kernel_size, stride=kernel_size // 2, bias=False)
        self.in_norm = GlobalLayerNorm(n_filters)
        self.bottleneck = nn.Conv1d(n_filters, bn_chan, 1)
        self.blocks = nn.ModuleList(
            TCNBlock(bn_chan, hidden[i], conv_kernel_size, 2 ** (i % n_blocks)) for i in range(n_total)
        )
        self.mask_act = nn.PReLU()
        self.mask_conv = nn.Conv1d(bn_chan, n_src * n_filters, 1)
        self.decoder = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=kernel_size // 2, bias=False)

    # -- spec / groups ---------------------------------------------------------------------------
    def spec(self) -> dict[str, Any]:
        """JSON-able architecture spec: ``{"arch": "conv_tasnet", "kwargs": {...}}``."""
        return {"arch": ARCH, "kwargs": dict(self.config)}

    def mask_groups(self) -> dict[str, int]:
        """Prunable channel groups and their sizes (the hidden channels of each block)."""
        return {f"blocks.{i}.hidden": b.in_conv.out_channels for i, b in enumerate(self.blocks)}

    def with_sizes(self, sizes: dict[str, int]) -> dict[str, Any]:
        """The spec of this architecture with group sizes replaced by ``sizes``."""
        kw = dict(self.config)
        hidden = list(kw["hidden"])
        for name, n in sizes.items():
            hidden[_block_index(name, len(hidden))] = int(n)
        kw["hidden"] = hidden
        return {"arch": ARCH, "kwargs": kw}

    def feature_modules(self) -> dict[str, nn.Module]:
        """Per group, the module whose output ``[B, H, T]`` is the group's last feature map (for HRank)."""
        return {f"blocks.{i}.hidden": b.norm2 for i, b in enumerate(self.blocks)}

    def l1_scores(self) -> dict[str, torch.Tensor]:
        """L1 norm of the filter producing each hidden channel (Li et al., ICLR 2017)."""
        return {f"blocks.{i}.hidden": b.in_conv.weight.detach().abs().sum(dim=(1, 2)) for i, b in enumerate(self.blocks)}

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, mix: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Separate ``mix`` ``[B, T]`` (or ``[T]``) into ``[B, n_src, T]``.

        Args:
            mix: Mixture waveform.
            masks: Optional channel masks per group name (see :meth:`mask_groups`).
        """
        if mix.dim() == 1:
            mix = mix.unsqueeze(0)
        if mix.dim() != 2:
            raise ValueError(f"mix must be [B, T] or [T], got {tuple(mix.shape)}")
        t = mix.shape[-1]
        hop = self.kernel_size // 2
        n_frames = -(-(t - self.kernel_size) // hop) + 1 if t > self.kernel_size else 1
        padded = (n_frames - 1) * hop + self.kernel_size
        x = F.pad(mix, (0, padded - t)).unsqueeze(1)
        w = F.relu(self.encoder(x))  # [B, N, K]
        y = self.bottleneck(self.in_norm(w))
        skip_sum = torch.zeros_like(y)
        for i, block in enumerate(self.blocks):
            m = masks.get(f"blocks.{i}.hidden") if masks else None
            res, skip = block(y, m)
            y = y + res
            skip_sum = skip_sum + skip
        est_mask = torch.sigmoid(self.mask_conv(self.mask_act(skip_sum)))
        b, _, k = est_mask.shape
        est_mask = est_mask.view(b, self.n_src, self.n_filters, k)
        masked = w.unsqueeze(1) * est_mask  # [B, S, N, K]
        out = self.decoder(masked.reshape(b * self.n_src, self.n_filters, k)).view(b, self.n_src, -1)
        return out[..., :t]

    # -- physical pruning ------------------------------------------------------------------------
    @torch.no_grad()
    def prune(self, keep: dict[str, torch.Tensor]) -> ConvTasNet:
        """A new, physically smaller model keeping channels ``keep[group]`` (indices) of each group.

        Every surviving tensor is inherited: conv weights *and* biases, gLN gamma/beta, PReLU slopes
        (the released SepPrune code copies conv weights only; we inherit everything).
        """
        groups = self.mask_groups()
        idx: dict[int, torch.Tensor] = {}
        for name, size in groups.items():
            k = keep.get(name)
            k = torch.arange(size) if k is None else torch.as_tensor(k, dtype=torch.long).sort().values
            if k.numel() < 1 or int(k.max()) >= size or k.unique().numel() != k.numel():
                raise ValueError(f"keep[{name!r}] must hold 1..{size} distinct indices < {size}")
            idx[_block_index(name, len(self.blocks))] = k
        unknown = set(keep) - set(groups)
        if unknown:
            raise ValueError(f"unknown groups {sorted(unknown)}; known: {sorted(groups)}")
        new = ConvTasNet(**{**self.config, "hidden": [int(idx[i].numel()) for i in range(len(self.blocks))]})
        src_sd, dst_sd = self.state_dict(), new.state_dict()
        for key in dst_sd:
            if not key.startswith("blocks."):
                dst_sd[key].copy_(src_sd[key])
        for i, (sb, db) in enumerate(zip(self.blocks, new.blocks, strict=True)):
            k = idx[i]
            db.in_conv.weight.copy_(sb.in_conv.weight[k])
            db.in_conv.bias.copy_(sb.in_conv.bias[k])
            db.act1.weight.copy_(sb.act1.weight)
            db.act2.weight.copy_(sb.act2.weight)
            for sn, dn in ((sb.norm1, db.norm1), (sb.norm2, db.norm2)):
                dn.gamma.copy_(sn.gamma[k])
                dn.beta.copy_(sn.beta[k])
            db.dconv.weight.copy_(sb.dconv.weight[k])
            db.dconv.bias.copy_(sb.dconv.bias[k])
            for sc, dc in ((sb.res_conv, db.res_conv), (sb.skip_conv, db.skip_conv)):
                dc.weight.copy_(sc.weight[:, k])
                dc.bias.copy_(sc.bias)
        return new


def _block_index(name: str, n: int) -> int:
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] != "hidden" or not parts[1].isdigit() or int(parts[1]) >= n:
        raise ValueError(f"unknown channel group {name!r}; expected 'blocks.<i>.hidden' with i < {n}")
    return int(parts[1])
