"""PGD/FGSM: threat-model invariants, mode/gradient plumbing, and that the attack actually attacks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trustlab.attacks.base import lp_norm, project
from trustlab.attacks.pgd import FGSM, PGD, kl_to_target_loss, random_start
from trustlab.models.small_cnn import SmallCNN


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = SmallCNN(width=4, hidden=16)
    x = torch.rand(16, 1, 28, 28)
    y = torch.randint(0, 10, (16,))
    return model, x, y


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
@pytest.mark.parametrize("init", ["uniform", "normal", "none"])
def test_pgd_stays_in_eps_ball_and_valid_range(model_and_data, norm, eps, init):
    model, x, y = model_and_data
    x_adv = PGD(model, eps, steps=3, norm=norm, random_init=init, generator=torch.Generator().manual_seed(1))(x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert float(lp_norm(x_adv - x, norm).max()) <= eps * (1 + 1e-5)
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_fgsm_in_ball_and_raises_loss(model_and_data, norm, eps):
    model, x, y = model_and_data
    model.eval()
    x_adv = FGSM(model, eps, norm=norm)(x, y)
    assert float(lp_norm(x_adv - x, norm).max()) <= eps * (1 + 1e-5)
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)


def test_pgd_raises_loss_more_than_random_noise(model_and_data):
    model, x, y = model_and_data
    model.eval()
    g = torch.Generator().manual_seed(0)
    x_adv = PGD(model, 0.1, steps=5, generator=g)(x, y)
    x_rand = project(x + random_start(x, 0.1, "linf", "uniform", g), x, 0.1, "linf")
    with torch.no_grad():
        assert F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x_rand), y)


def test_attack_restores_mode_leaves_no_param_grads_and_works_under_no_grad(model_and_data):
    model, x, y = model_and_data
    model.train()
    with torch.no_grad():
        PGD(model, 0.1, steps=2)(x, y)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_kl_loss_targets_and_seeded_reproducibility(model_and_data):
    model, x, _ = model_and_data
    model.eval()
    with torch.no_grad():
        target = F.softmax(model(x), 1)
    a = PGD(model, 0.1, steps=2, random_init="normal", loss=kl_to_target_loss,
            generator=torch.Generator().manual_seed(3))(x, target)
    b = PGD(model, 0.1, steps=2, random_init="normal", loss=kl_to_target_loss,
            generator=torch.Generator().manual_seed(3))(x, target)
    assert torch.equal(a, b)
    with torch.no_grad():
        assert float(kl_to_target_loss(model(a), target).sum()) > float(kl_to_target_loss(model(x), target).sum())


def test_invalid_parameters_and_inputs_are_refused(model_and_data):
    model, x, y = model_and_data
    with pytest.raises(ValueError):
        PGD(model, 0.0)
    with pytest.raises(ValueError):
        PGD(model, 0.1, norm="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PGD(model, 0.1, steps=0)
    with pytest.raises(ValueError, match="inputs must lie"):
        PGD(model, 0.1, steps=1)(x * 3 - 1, y)
