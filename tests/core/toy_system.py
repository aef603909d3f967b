"""A toy system used by the core tests (registered under the name ``toy`` by the fixtures)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from trustlab.config import SystemConfig
from trustlab.systems.base import SystemSpec


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 3


@dataclass
class ToyConfig(SystemConfig):
    n: int = 4
    name: str = "a"
    flag: bool = False
    inner: Inner = field(default_factory=Inner)
    methods: list[str] = field(default_factory=lambda: ["ours", "base"])

    SCALES = {"smoke": {"n": 2, "inner.steps": 1}}


CALLS: list[str] = []


def run(cfg: ToyConfig, ctx):  # noqa: ANN001, ANN201
    rec = ctx.record(cfg)
    for seed in cfg.seeds:
        for m in cfg.methods:
            def unit(m=m, seed=seed):  # noqa: ANN001, ANN202
                CALLS.append(f"{m}/{seed}")
                if os.environ.get("TOY_CRASH_AT") == f"{m}/{seed}":
                    raise KeyboardInterrupt  # a killed run
                x = torch.rand(cfg.n).sum().item()  # seeded by ctx.unit
                return {"acc": 0.5 + 0.1 * (m == "ours"), "noise": x}
            r = ctx.unit(f"default/{m}/seed={seed}", unit, seed=seed)
            rec.add_row("default", m, seed, **r)
            rec.add_series("default", m, seed, 0, loss=1.0)
            rec.add_series("default", m, seed, 1, loss=0.5)
    rec.add_claim("C1", "ours beats base", rec.mean("ours", "acc") > rec.mean("base", "acc"),
                  ours=rec.mean("ours", "acc"), base=rec.mean("base", "acc"))
    return rec


SYSTEM = SystemSpec(name="toy", title="Toy", paper="none", config="core.toy_system:ToyConfig",
                    run="core.toy_system:run", headline=[("ours", "acc")])
