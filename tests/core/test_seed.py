import random

import numpy as np
import torch

from trustlab.utils.seed import derive_seed, make_generator, make_rng, seed_everything


def draw():
    return (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_seed_everything_reproducible():
    seed_everything(3)
    a = draw()
    seed_everything(3)
    assert draw() == a
    seed_everything(4)
    assert draw() != a


def test_generators_independent_of_global_state():
    g1, g2 = make_generator(5), make_generator(5)
    torch.rand(10)  # global draws do not disturb the generators
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    assert make_rng(1).integers(0, 1000) == make_rng(1).integers(0, 1000)


def test_derive_seed_stable_and_distinct():
    assert derive_seed(0, "client", 1) == derive_seed(0, "client", 1)
    assert derive_seed(0, "client", 1) != derive_seed(0, "client", 2)
