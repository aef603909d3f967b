"""A small TDANet-style separator (weight-shared U-block with global attention + FFN), prunable.

Li, Yang & Hu, *An efficient encoder-decoder architecture with top-down attention for speech
separation*, ICLR 2023 (TDANet, arXiv:2209.15200). This is a reduced re-implementation for CPU
experiments, not the original: one U-block is applied ``n_iter`` times with shared weights; it
projects B->C channels, builds ``depth`` coarser scales with strided depthwise convs, sums them at the
coarsest scale, applies a global-attention module (multi-head self-attention + FFN), injects the
global context back into every scale with a sigmoid gate (a simplification of TDANet's local
attention), fuses the scales top-down and projects back C->B with a residual.

Prunable group (the one SepPrune prunes in TDANet): the hidden channels of the global-attention FFN,
``ffn.hidden`` (fc1 out -> depthwise conv -> fc2 in). Because the block is weight-shared, one mask
acts in all ``n_iter`` iterations and its cost counts ``n_iter`` times. No normalization sits over the
masked dimension, so masking equals physical pruning exactly.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trustlab.models.conv_tasnet import GlobalLayerNorm

ARCH = "tdanet_lite"
GROUP = "ffn.hidden"


class GlobalAttention(nn.Module):
    """MHSA + FFN at the coarsest scale (pre-norm, residual)."""

    def __init__(self, chan: int, ffn_chan: int, n_heads: int) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(chan)
        self.attn = nn.MultiheadAttention(chan, n_heads, batch_first=True)
        self.norm_ffn = GlobalLayerNorm(chan)
        self.fc1 = nn.Conv1d(chan, ffn_chan, 1)
        self.dconv = nn.Conv1d(ffn_chan, ffn_chan, 5, padding=2, groups=ffn_chan)
        self.fc2 = nn.Conv1d(ffn_chan, chan, 1)

    def forward(self, g: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        q = self.norm_attn(g.transpose(1, 2))
        a, _ = self.attn(q, q, q, need_weights=False)
        g = g + a.transpose(1, 2)
        h = self.fc1(self.norm_ffn(g))
        if mask is not None:
            h = h * mask[None, :, None]
        h = self.dconv(h)
        if mask is not None:
            h = h * mask[None, :, None]
        return g + self.fc2(F.relu(h))


class UBlock(nn.Module):
    """Weight-shared multi-scale block of the TDANet-style separator."""

    def __init__(self, bn_chan: int, chan: int, ffn_chan: int, depth: int, n_heads: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(bn_chan, chan, 1)
        self.act = nn.PReLU()
        self.norm = GlobalLayerNorm(chan)
        self.down = nn.ModuleList(nn.Conv1d(chan, chan, 5, stride=2, padding=2, groups=chan) for _ in range(depth))
        self.down_norm = nn.ModuleList(GlobalLayerNorm(chan) for _ in range(depth))
        self.glob = GlobalAttention(chan, ffn_chan, n_heads)
        self.res = nn.Conv1d(chan, bn_chan, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        d = [self.norm(self.act(self.proj(x)))]
        for conv, norm in zip(self.down, self.down_norm, strict=True):
            d.append(norm(conv(d[-1])))
        t_min = d[-1].shape[-1]
        g = sum(F.adaptive_avg_pool1d(s, t_min) for s in d)
        g = self.glob(g, mask)
        fused = [s * torch.sigmoid(F.interpolate(g, size=s.shape[-1])) + F.interpolate(g, size=s.shape[-1]) for s in d]
        y = fused[-1]
        for s in reversed(fused[:-1]):
            y = s + F.interpolate(y, size=s.shape[-1])
        return x + self.res(y)


class TDANetLite(nn.Module):
    """TDANet-style separator: encoder, bottleneck, ``n_iter`` x shared U-block, mask, decoder.

    Args:
        n_src: Number of sources.
        n_filters: N, encoder filters.
        kernel_size: L, encoder filter length (hop L/2).
        bn_chan: B, bottleneck channels.
        chan: C, U-block channels (attention embedding size).
        ffn_chan: F, hidden channels of the global-attention FFN (the prunable group).
        depth: Number of downsampling stages.
        n_iter: Number of applications of the weight-shared U-block.
        n_heads: Attention heads (must divide ``chan``).
    """

    def __init__(self, n_src: int = 2, n_filters: int = 64, kernel_size: int = 16, bn_chan: int = 48,
                 chan: int = 64, ffn_chan: int = 128, depth: int = 3, n_iter: int = 4, n_heads: int = 4) -> None:
        super().__init__()
        for name, v in [("n_src", n_src), ("n_filters", n_filters), ("bn_chan", bn_chan), ("chan", chan),
                        ("ffn_chan", ffn_chan), ("n_iter", n_iter), ("n_heads", n_heads)]:
            if v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if kernel_size < 2 or kernel_size % 2:
            raise ValueError(f"kernel_size must be an even number >= 2, got {kernel_size}")
        if chan % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide chan={chan}")
        self.config = {"n_src": n_src, "n_filters": n_filters, "kernel_size": kernel_size, "bn_chan": bn_chan,
                       "chan": chan, "ffn_chan": ffn_chan, "depth": depth, "n_iter": n_iter, "n_heads": n_heads}
        self.n_src, self.n_filters, self.kernel_size, self.n_iter = n_src, n_filters, kernel_size, n_iter
        self.encoder = nn.Conv1d(1, n_filters, kernel_size, stride=kernel_size // 2, bias=False)
        self.in_norm = GlobalLayerNorm(n_filters)
        self.bottleneck = nn.Conv1d(n_filters, bn_chan, 1)
        self.block = UBlock(bn_chan, chan, ffn_chan, depth, n_heads)
        self.mask_act = nn.PReLU()
        self.mask_conv = nn.Conv1d(bn_chan, n_src * n_filters, 1)
        self.decoder = nn.ConvTranspose1d(n_filters, 1, kernel_size, stride=kernel_size // 2, bias=False)

    def spec(self) -> dict[str, Any]:
        """JSON-able architecture spec."""
        return {"arch": ARCH, "kwargs": dict(self.config)}

    def mask_groups(self) -> dict[str, int]:
        """The single prunable group: the FFN hidden channels."""
        return {GROUP: self.block.glob.fc1.out_channels}

    def with_sizes(self, sizes: dict[str, int]) -> dict[str, Any]:
        """The spec with the FFN width replaced."""
        unknown = set(sizes) - {GROUP}
        if unknown:
            raise ValueError(f"unknown channel groups {sorted(unknown)}; expected {GROUP!r}")
        kw = dict(self.config)
        if GROUP in sizes:
            kw["ffn_chan"] = int(sizes[GROUP])
        return {"arch": ARCH, "kwargs": kw}

    def feature_modules(self) -> dict[str, nn.Module]:
        """The module whose output ``[B, F, T]`` is the FFN group's feature map (for HRank)."""
        return {GROUP: self.block.glob.dconv}

    def l1_scores(self) -> dict[str, torch.Tensor]:
        """L1 norm of each fc1 filter."""
        return {GROUP: self.block.glob.fc1.weight.detach().abs().sum(dim=(1, 2))}

    def forward(self, mix: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Separate ``mix`` ``[B, T]`` into ``[B, n_src, T]`` (optionally with a channel mask)."""
        if mix.dim() == 1:
            mix = mix.unsqueeze(0)
        if mix.dim() != 2:
            raise ValueError(f"mix must be [B, T] or [T], got {tuple(mix.shape)}")
        t = mix.shape[-1]
        hop = self.kernel_size // 2
        n_frames = -(-(t - self.kernel_size) // hop) + 1 if t > self.kernel_size else 1
        x = F.pad(mix, (0, (n_frames - 1) * hop + self.kernel_size - t)).unsqueeze(1)
        w = F.relu(self.encoder(x))
        y = self.bottleneck(self.in_norm(w))
        m = masks.get(GROUP) if masks else None
        for _ in range(self.n_iter):
            y = self.block(y, m)
        est = torch.sigmoid(self.mask_conv(self.mask_act(y)))
        b, _, k = est.shape
        masked = w.unsqueeze(1) * est.view(b, self.n_src, self.n_filters, k)
        out = self.decoder(masked.reshape(b * self.n_src, self.n_filters, k)).view(b, self.n_src, -1)
        return out[..., :t]

    @torch.no_grad()
    def prune(self, keep: dict[str, torch.Tensor]) -> TDANetLite:
        """A physically smaller copy keeping FFN channels ``keep["ffn.hidden"]``; inherits every tensor."""
        unknown = set(keep) - {GROUP}
        if unknown:
            raise ValueError(f"unknown channel groups {sorted(unknown)}; expected {GROUP!r}")
        size = self.mask_groups()[GROUP]
        k = keep.get(GROUP)
        k = torch.arange(size) if k is None else torch.as_tensor(k, dtype=torch.long).sort().values
        if k.numel() < 1 or int(k.max()) >= size or k.unique().numel() != k.numel():
            raise ValueError(f"keep[{GROUP!r}] must hold 1..{size} distinct indices < {size}")
        new = TDANetLite(**{**self.config, "ffn_chan": int(k.numel())})
        src, dst = self.state_dict(), new.state_dict()
        for key in dst:
            if not key.startswith("block.glob.fc") and not key.startswith("block.glob.dconv"):
                dst[key].copy_(src[key])
        s, d = self.block.glob, new.block.glob
        d.fc1.weight.copy_(s.fc1.weight[k])
        d.fc1.bias.copy_(s.fc1.bias[k])
        d.dconv.weight.copy_(s.dconv.weight[k])
        d.dconv.bias.copy_(s.dconv.bias[k])
        d.fc2.weight.copy_(s.fc2.weight[:, k])
        d.fc2.bias.copy_(s.fc2.bias)
        return new
