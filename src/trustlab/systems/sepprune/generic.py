"""SepPrune on any separation model: torch-pruning's dependency graph supplies the channel groups.

A user's separator is any ``nn.Module`` mapping mixtures ``[B, T]`` to sources ``[B, S, T]``; it needs
no trustlab-specific method. :class:`GroupedModel` wraps it:

1. **Groups** (:func:`discover_groups`): ``torch_pruning.DependencyGraph`` finds every set of coupled
   channels (a conv's outputs with the norms, activations, depthwise convs and consumers that must be
   sliced with them, residual streams included). Groups that touch the model's first or last layer
   (encoder/decoder: the waveform interface), a ``MultiheadAttention``, a grouped (non-depthwise)
   conv, or that map channels non-1:1 (reshapes into sources) are left out; the others are tried
   by pruning one channel of a copy, which must still produce the same output shape.
2. **Layer-cost analysis** (:class:`LayerCost`): the multiply-accumulates of every Conv1d,
   ConvTranspose1d and Linear layer, as a function of how many channels each group keeps
   (``r_l * in_l * out_l / groups_l``; depthwise layers ``r_l * C``), exact for any mix of pruned
   input and output dimensions. Its MAC totals agree with ``torch.utils.flop_counter`` (tested).
3. **Differentiable channel masks**: forward hooks multiply every output tensor of a group's
   channel-producing modules by the group's 0/1 mask, so :class:`~trustlab.systems.sepprune.method.SepPrune`
   learns its Gumbel/STE scores on the frozen user model unchanged. As in the released SepPrune code,
   a normalization over the masked dimension (``GroupNorm(1, C)``) keeps masked channels in its
   statistics, so the masked model approximates (does not equal) the pruned one.
4. **Physical pruning** through ``group.prune()`` on the dependency graph; the plan (root module,
   removed indices) is saved in JSON beside a safetensors state dict, and :func:`load_pruned`
   replays it on a freshly built model (no pickle).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustlab.errors import UserError
from trustlab.utils.io import atomic_write_json, load_tensors, read_json, save_tensors
from trustlab.utils.logging import get_logger

log = get_logger(__name__)

PRUNED_WEIGHTS = "pruned.safetensors"
PRUNED_SPEC = "pruned.json"
_LAYERS = (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)


# -- the user's model -------------------------------------------------------------------------------
def load_factory(ref: str) -> Callable[[], nn.Module]:
    """``"package.module:factory"`` or ``"path/to/file.py:factory"`` -> the callable.

    Raises:
        UserError: malformed reference, module not importable, or no such callable.
    """
    if ":" not in ref:
        raise UserError(f"--model {ref!r} is not MODULE:FACTORY", "write e.g. --model mypkg.models:make_separator")
    mod_name, _, attr = ref.rpartition(":")
    if not mod_name or not attr:
        raise UserError(f"--model {ref!r} is not MODULE:FACTORY", "write e.g. --model mypkg.models:make_separator")
    try:
        if mod_name.endswith(".py") or "/" in mod_name:
            path = Path(mod_name).resolve()
            if not path.is_file():
                raise UserError(f"model file {mod_name!r} does not exist", "check the path before ':'")
            name = f"_trustlab_user_{abs(hash(str(path)))}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(mod_name)
    except UserError:
        raise
    except Exception as exc:  # the user's module failed to import: name it, one line
        raise UserError(f"cannot import {mod_name!r} ({type(exc).__name__}: {str(exc)[:120]})",
                        "put the module on PYTHONPATH or pass path/to/file.py:FACTORY") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"{mod_name!r} has no callable {attr!r}", "name a function or class returning an nn.Module")
    return fn


def build_user_model(ref: str, weights: str | Path | None = None) -> nn.Module:
    """Call the factory ``ref`` and load ``weights`` (safetensors state dict) when given."""
    model = load_factory(ref)()
    if not isinstance(model, nn.Module):
        raise UserError(f"{ref!r} returned {type(model).__name__}, not an nn.Module", "return the separator module")
    if weights is not None:
        p = Path(weights)
        if p.suffix != ".safetensors":
            raise UserError(f"--weights {str(p)!r} is not a .safetensors file", "convert the state dict with safetensors")
        if not p.is_file():
            raise UserError(f"--weights {str(p)!r} does not exist", "check the path")
        tensors, _ = load_tensors(p)
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise UserError(f"--weights do not fit {ref!r} ({str(exc).splitlines()[0][:140]})",
                            "pass the state dict saved from this model class") from exc
    return model.eval()


def check_separator(model: nn.Module, n_samples: int = 800) -> int:
    """Check ``model`` maps ``[B, T]`` to ``[B, S, T]``; returns ``S``.

    Raises:
        UserError: the forward pass fails or returns another shape.
    """
    x = torch.randn(2, n_samples, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as exc:
        raise UserError(f"the model fails on a mixture batch of shape (2, {n_samples}) "
                        f"({type(exc).__name__}: {str(exc)[:100]})",
                        "the model must map mixtures (batch, time) to sources (batch, speakers, time)") from exc
    shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
    if not isinstance(y, torch.Tensor) or y.dim() != 3 or y.shape[0] != 2 or y.shape[2] != n_samples or y.shape[1] < 1:
        raise UserError(f"the model maps mixtures (2, {n_samples}) to {shape}, expected (2, speakers, {n_samples})",
                        "return sources shaped (batch, speakers, time), e.g. trim or pad to the input length")
    return int(y.shape[1])


# -- groups -----------------------------------------------------------------------------------------
def _zeros(model: nn.Module, n_samples: int) -> torch.Tensor:
    """A silent ``[1, n_samples]`` mixture on the model's device."""
    p = next(model.parameters(), None)
    return torch.zeros(1, n_samples, device=p.device if p is not None else "cpu")


def _idx(i: Any) -> int:
    return int(getattr(i, "idx", i))


@dataclass
class Group:
    """One prunable channel group.

    Attributes:
        name: ``<root module name>.<out|in>`` (a stable id).
        root: Name of the module whose channels are the group's channels.
        size: Number of channels.
        out_modules: ``(module name, channel indices)`` of modules whose *outputs* carry the channels.
        in_modules: ``(module name, channel indices)`` of modules that *consume* them.
    """

    name: str
    root: str
    size: int
    out_modules: list[tuple[str, list[int]]]
    in_modules: list[tuple[str, list[int]]]


def _handler_name(dep: Any) -> str:
    h = dep.handler
    return getattr(h, "__name__", type(h).__name__)


def execution_order(model: nn.Module, n_samples: int) -> list[str]:
    """Names of the parameterized leaf modules in the order the forward pass runs them."""
    order: list[str] = []
    handles = []
    for name, mod in model.named_modules():
        if len(list(mod.children())) == 0 and any(True for _ in mod.parameters(recurse=False)):
            handles.append(mod.register_forward_hook(lambda m, i, o, n=name: order.append(n)))
    try:
        with torch.no_grad():
            model(_zeros(model, n_samples))
    finally:
        for h in handles:
            h.remove()
    seen: set[str] = set()
    return [n for n in order if not (n in seen or seen.add(n))]


def dependency_graph(model: nn.Module, n_samples: int) -> Any:
    """torch-pruning's dependency graph of ``model`` traced on a ``[1, n_samples]`` mixture."""
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=_zeros(model, n_samples), verbose=False)


def discover_groups(model: nn.Module, n_samples: int = 800) -> list[Group]:
    """The prunable channel groups of ``model`` (see the module docstring for what is left out)."""
    names = {m: n for n, m in model.named_modules()}
    order = execution_order(model, n_samples)
    if not order:
        raise UserError("the model has no parameterized layers", "pass a trainable separator")
    interface = {order[0], order[-1]}
    dg = dependency_graph(model, n_samples)
    out: list[Group] = []
    for g in dg.get_all_groups(root_module_types=_LAYERS):
        items = g.items
        root_mod = items[0].dep.target.module
        root = names.get(root_mod)
        n = len(items[0].idxs)
        if root is None or n < 2 or _handler_name(items[0].dep) != "prune_out_channels":
            continue
        ok, outs, ins = True, [], []
        for it in items:
            mod = it.dep.target.module
            name = names.get(mod)
            if name is None:  # torch-pruning's internal ops (reshape, element-wise, output)
                if type(mod).__name__ == "_OutputOp":
                    ok = False
                continue
            if name in interface or isinstance(mod, nn.MultiheadAttention) or len(it.idxs) != n:
                ok = False
                break
            if isinstance(mod, (nn.Conv1d, nn.ConvTranspose1d)) and mod.groups not in (1, mod.in_channels):
                ok = False
                break
            entry = (name, [_idx(i) for i in it.idxs])
            (outs if _handler_name(it.dep) == "prune_out_channels" else ins).append(entry)
        if ok and outs:
            out.append(Group(root, root, n, outs, ins))
    valid = []
    for grp in out:  # a group must survive losing a channel with the same output shape
        trial = copy.deepcopy(model)
        try:
            apply_plan(trial, [{"root": grp.root, "remove": [0]}], n_samples)
            with torch.no_grad():
                ok = trial(_zeros(trial, n_samples)).shape == model(_zeros(model, n_samples)).shape
        except Exception:  # noqa: BLE001 - a group torch-pruning cannot cut cleanly is skipped
            ok = False
        if ok:
            valid.append(grp)
        else:
            log.info("group %s skipped: pruning it breaks the forward pass", grp.name)
    return valid


def apply_plan(model: nn.Module, plan: list[dict[str, Any]], n_samples: int) -> nn.Module:
    """Prune ``model`` in place: for each step remove channels ``remove`` of the group rooted at ``root``."""
    import torch_pruning as tp

    dg = dependency_graph(model, n_samples)
    mods = dict(model.named_modules())
    for step in plan:
        if not step["remove"]:
            continue
        root = mods[step["root"]]
        fn = tp.prune_linear_out_channels if isinstance(root, nn.Linear) else tp.prune_conv_out_channels
        group = dg.get_pruning_group(root, fn, idxs=[int(i) for i in step["remove"]])
        group.prune()
    return model


# -- layer-cost analysis ----------------------------------------------------------------------------
@dataclass
class _Layer:
    name: str
    rate: float  # MACs per (in channel x out channel / groups), or per channel for depthwise
    c_in: int
    c_out: int
    groups: int
    g_in: str | None
    g_out: str | None
    depthwise: bool


class LayerCost:
    """Exact MACs of ``model`` as a function of the channels each group keeps (bilinear in the counts).

    Duck-types :class:`~trustlab.systems.sepprune.analysis.CostModel` (``dense``, ``macs``, ``ratio``) and
    adds :meth:`project`, the budget projection :func:`~trustlab.systems.sepprune.method.budget_keep` uses.
    """

    def __init__(self, model: nn.Module, groups: list[Group], n_samples: int) -> None:
        rates: dict[str, float] = {}
        handles = []
        mods = dict(model.named_modules())

        def hook(name: str):  # noqa: ANN202
            def fn(m: nn.Module, i: tuple, o: torch.Tensor) -> None:
                if isinstance(m, nn.Conv1d):
                    rate = o.numel() / m.out_channels * m.kernel_size[0]
                elif isinstance(m, nn.ConvTranspose1d):
                    rate = i[0].numel() / m.in_channels * m.kernel_size[0]
                else:
                    rate = o.numel() / m.out_features
                rates[name] = rates.get(name, 0.0) + float(rate)
            return fn

        for name, m in model.named_modules():
            if isinstance(m, _LAYERS):
                handles.append(m.register_forward_hook(hook(name)))
        try:
            with torch.no_grad():
                model(_zeros(model, n_samples))
        finally:
            for h in handles:
                h.remove()
        g_in = {n: g.name for g in groups for n, _ in g.in_modules}
        g_out = {n: g.name for g in groups for n, _ in g.out_modules}
        self.sizes = {g.name: g.size for g in groups}
        self.layers: list[_Layer] = []
        for name, rate in rates.items():
            m = mods[name]
            c_in, c_out = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
            groups_ = getattr(m, "groups", 1)
            dw = groups_ > 1 and groups_ == c_in
            self.layers.append(_Layer(name, rate, c_in, c_out, groups_, g_in.get(name), g_out.get(name), dw))
        self.dense = self.macs(self.sizes)
        self.base = self.macs({g: 0 for g in self.sizes})  # what no group touches (reporting only)
        #: Per-channel MACs of each group at the dense width of the others (reporting; not used to budget).
        self.cost = {g: (self.dense - self.macs({**self.sizes, g: self.sizes[g] - 1})) for g in self.sizes}

    def layer_macs(self, kept: dict[str, float]) -> dict[str, float]:
        """MACs per layer at ``kept`` channels per group."""
        out = {}
        for ly in self.layers:
            if ly.depthwise:
                c = kept.get(ly.g_out, ly.c_out) if ly.g_out else ly.c_out
                out[ly.name] = ly.rate * c  # one input channel per output channel
            else:
                ci = kept.get(ly.g_in, ly.c_in) if ly.g_in else ly.c_in
                co = kept.get(ly.g_out, ly.c_out) if ly.g_out else ly.c_out
                out[ly.name] = ly.rate * ci * co / ly.groups
        return out

    def macs(self, kept: dict[str, float]) -> float:
        """Total MACs at ``kept`` channels per group (groups not named stay dense)."""
        return float(sum(self.layer_macs(kept).values()))

    def ratio(self, kept: dict[str, float]) -> float:
        """MACs relative to the dense model."""
        return self.macs(kept) / self.dense

    def project(self, scores: dict[str, torch.Tensor], target: float, min_keep: int = 1) -> dict[str, torch.Tensor]:
        """Keep-masks of the highest-scoring channels whose exact MACs fit ``target`` x dense (greedy)."""
        if not 0 < target <= 1:
            raise ValueError(f"target must be in (0, 1], got {target}")
        budget = target * self.dense
        keep = {g: torch.zeros_like(s, dtype=torch.bool) for g, s in scores.items()}
        kept = {g: 0 for g in self.sizes}
        for g, s in scores.items():
            top = torch.argsort(s, descending=True, stable=True)[:min_keep]
            keep[g][top] = True
            kept[g] = len(top)
        used = self.macs(kept)
        if used > budget + 1e-6:
            raise ValueError(f"a MACs ratio of {target} is below the minimum ({used / self.dense:.3f}) reachable "
                             f"with {min_keep} channel(s) per group")
        # the marginal cost of one more channel of g is linear in the others' counts: a_g + sum_h b_gh * kept_h
        lin = {g: 0.0 for g in self.sizes}
        cross: dict[str, dict[str, float]] = {g: {} for g in self.sizes}
        for ly in self.layers:
            if ly.depthwise and ly.g_out:
                lin[ly.g_out] += ly.rate
                continue
            if ly.depthwise:
                continue
            r = ly.rate / ly.groups
            if ly.g_in and ly.g_out and ly.g_in != ly.g_out:
                cross[ly.g_in][ly.g_out] = cross[ly.g_in].get(ly.g_out, 0.0) + r
                cross[ly.g_out][ly.g_in] = cross[ly.g_out].get(ly.g_in, 0.0) + r
            elif ly.g_in and ly.g_out:  # same group on both sides: quadratic, handled exactly below
                cross[ly.g_in][ly.g_in] = cross[ly.g_in].get(ly.g_in, 0.0) + r
            elif ly.g_in:
                lin[ly.g_in] += r * ly.c_out
            elif ly.g_out:
                lin[ly.g_out] += r * ly.c_in

        def marginal(g: str) -> float:
            c = lin[g]
            for h, r in cross[g].items():
                c += r * (2 * kept[g] + 1 if h == g else kept[h])
            return c

        flat = sorted(((float(s[i]), g, i) for g, s in scores.items() for i in range(len(s)) if not keep[g][i]),
                      key=lambda t: -t[0])
        for _, g, i in flat:
            c = marginal(g)
            if used + c <= budget + 1e-6:
                keep[g][i] = True
                kept[g] += 1
                used += c
        return keep


def flop_counter_macs(model: nn.Module, n_samples: int) -> float:
    """MACs of one ``[1, n_samples]`` forward pass by ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(_zeros(model, n_samples))
    return counter.get_total_flops() / 2


# -- masks and pruning on the user's model ----------------------------------------------------------
class GroupedModel(nn.Module):
    """A user's separator seen through its channel groups (the interface :class:`SepPrune` drives).

    ``forward(mix, masks={group: [C] 0/1 tensor})`` runs the model with every output of a group's
    channel-producing modules multiplied by the mask; ``prune(keep)`` returns a physically pruned copy.
    """

    def __init__(self, model: nn.Module, n_samples: int = 800, groups: list[Group] | None = None) -> None:
        super().__init__()
        self.model = model
        self.n_samples = n_samples
        self.groups = {g.name: g for g in (groups if groups is not None else discover_groups(model, n_samples))}
        if not self.groups:
            raise UserError("torch-pruning found no prunable channel group inside the model",
                            "the separator needs conv/linear layers between its encoder and decoder")
        self._masks: dict[str, torch.Tensor] | None = None
        self._capture: dict[str, list[torch.Tensor]] | None = None
        mods = dict(model.named_modules())
        self._hooked: dict[str, list[tuple[str, torch.Tensor]]] = {}
        for g in self.groups.values():
            for name, idx in g.out_modules:
                self._hooked.setdefault(name, []).append((g.name, torch.tensor(idx, dtype=torch.long)))
        self._handles = [mods[n].register_forward_hook(self._hook(n)) for n in self._hooked]
        self.last_out = {g.name: g.out_modules[-1][0] for g in self.groups.values()}

    def _hook(self, name: str):  # noqa: ANN202
        def fn(m: nn.Module, i: tuple, o: torch.Tensor) -> torch.Tensor | None:
            if not isinstance(o, torch.Tensor):
                return None
            dim = o.dim() - 1 if isinstance(m, (nn.Linear, nn.LayerNorm)) else 1
            for gname, idx in self._hooked[name]:
                if self._capture is not None and self.last_out[gname] == name:
                    self._capture.setdefault(gname, []).append(o.detach().movedim(dim, 1)[:, idx])
                if self._masks is not None and gname in self._masks:
                    full = torch.ones(o.shape[dim], dtype=o.dtype, device=o.device)
                    full = full.index_copy(0, idx.to(o.device), self._masks[gname].to(o.dtype))
                    shape = [1] * o.dim()
                    shape[dim] = -1
                    o = o * full.view(shape)
            return o
        return fn

    def remove_hooks(self) -> None:
        """Detach the mask hooks from the wrapped model."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def mask_groups(self) -> dict[str, int]:
        """Group name -> number of channels."""
        return {g: grp.size for g, grp in self.groups.items()}

    def forward(self, mix: torch.Tensor, masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        self._masks = masks
        try:
            return self.model(mix)
        finally:
            self._masks = None

    def l1_scores(self) -> dict[str, torch.Tensor]:
        """Group L1 magnitude: per channel, the summed |weight| of every parameterized layer it touches."""
        mods = dict(self.model.named_modules())
        out = {}
        for g, grp in self.groups.items():
            s = torch.zeros(grp.size)
            for entries, dim in ((grp.out_modules, 0), (grp.in_modules, 1)):
                for name, idx in entries:
                    m = mods[name]
                    w = getattr(m, "weight", None)
                    if not isinstance(w, torch.Tensor) or w.dim() < 2:
                        continue
                    d = 1 - dim if isinstance(m, nn.ConvTranspose1d) else dim
                    if d == 1 and getattr(m, "groups", 1) > 1:
                        continue  # a depthwise conv's channels are counted on its output side
                    w = w.detach().abs().movedim(d, 0).cpu()
                    s += w[torch.tensor(idx)].reshape(len(idx), -1).sum(1)
            out[g] = s
        return out

    @torch.no_grad()
    def hrank_scores(self, mix: torch.Tensor) -> dict[str, torch.Tensor]:
        """HRank (Lin et al., CVPR 2020) for 1-D feature maps: the mean rank of each channel's map.

        Each channel's map (the output of the group's last channel-producing module) over ``T`` steps is
        folded into a ``[w, T // w]`` matrix (``w = floor(sqrt(T))``, our 1-D adaptation of HRank's 2-D
        maps) and its numerical rank (``torch.linalg.matrix_rank``, relative tolerance ``HRANK_RTOL``) is
        averaged over the calibration batch.
        """
        self._capture = {}
        try:
            self.model.eval()
            self.model(mix)
            captured = self._capture
        finally:
            self._capture = None
        return {g: feature_map_ranks(torch.cat(captured[g], 0)) for g in self.groups}

    def plan(self, keep: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """The pruning plan that keeps channels ``keep[g]`` (indices) of each group."""
        plan = []
        for g, grp in self.groups.items():
            k = keep.get(g)
            kept = set(range(grp.size)) if k is None else {int(i) for i in torch.as_tensor(k).tolist()}
            if not kept or max(kept) >= grp.size:
                raise ValueError(f"keep[{g!r}] must hold 1..{grp.size} indices < {grp.size}")
            plan.append({"root": grp.root, "remove": [i for i in range(grp.size) if i not in kept]})
        return plan

    def prune(self, keep: dict[str, torch.Tensor]) -> nn.Module:
        """A physically pruned copy of the wrapped model (no hooks) keeping ``keep[g]`` of each group."""
        plan = self.plan(keep)
        self.remove_hooks()
        try:
            pruned = apply_plan(copy.deepcopy(self.model), plan, self.n_samples)
        finally:
            mods = dict(self.model.named_modules())
            self._handles = [mods[n].register_forward_hook(self._hook(n)) for n in self._hooked]
        pruned.trustlab_plan = plan  # type: ignore[attr-defined]
        return pruned


#: Singular values below this fraction of the largest do not count towards a feature map's rank. Float
#: maps of real signals are almost always full-rank at machine precision (every channel ties), so the
#: 1-D adaptation counts the numerical rank at 1 % of the top singular value.
HRANK_RTOL = 1e-2


def feature_map_ranks(x: torch.Tensor, rtol: float = HRANK_RTOL) -> torch.Tensor:
    """Mean numerical rank per channel of feature maps ``x`` ``[B, C, T]`` folded to ``[w, T // w]``."""
    b, c, t = x.shape
    w = max(1, int(t**0.5))
    mats = x[..., : w * (t // w)].reshape(b * c, w, t // w).float()
    return torch.linalg.matrix_rank(mats, rtol=rtol).reshape(b, c).float().mean(0)


# -- artifacts --------------------------------------------------------------------------------------
def save_pruned(out: str | Path, model: nn.Module, factory: str, plan: list[dict[str, Any]], n_samples: int,
                extra: dict[str, Any] | None = None) -> Path:
    """Write ``out/pruned.safetensors`` (state dict) and ``out/pruned.json`` (factory + plan); no pickle."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_tensors(out / PRUNED_WEIGHTS, sd, {"factory": factory})
    atomic_write_json(out / PRUNED_SPEC, {"format": "trustlab-sepprune-pruned/1", "factory": factory,
                                          "trace_samples": n_samples, "plan": plan, **(extra or {})})
    return out


def load_pruned(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by ``trustlab prune`` (``path`` = its ``--out`` folder): factory, plan, weights.

    Raises:
        UserError: missing files, a factory that no longer imports, or weights that do not fit.
    """
    p = Path(path)
    if p.is_file():
        p = p.parent
    spec_path = p / PRUNED_SPEC
    if not spec_path.is_file():
        raise UserError(f"{str(p)!r} holds no {PRUNED_SPEC}", "pass the --out folder of `trustlab prune`")
    spec = read_json(spec_path)
    model = load_factory(str(spec["factory"]))()
    apply_plan(model, spec["plan"], int(spec["trace_samples"]))
    tensors, _ = load_tensors(p / PRUNED_WEIGHTS)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise UserError(f"weights in {str(p / PRUNED_WEIGHTS)!r} do not fit the replayed plan "
                        f"({str(exc).splitlines()[0][:120]})", "save them together with `trustlab prune`") from exc
    return model.to(device).eval()


def spec_summary(spec_path: str | Path) -> dict[str, Any]:
    """The JSON written beside a pruned model."""
    return json.loads(Path(spec_path).read_text())
