import math

import pytest
import torch

from toycode.core.diffusion import Process, cosine_schedule, linear_schedule


def test_schedules_are_float64_and_decreasing():
    for ac in (linear_schedule(), cosine_schedule()):
        assert ac.dtype == torch.float64 and len(ac) == 1000
        assert (ac[1:] < ac[:-1]).all() and 0 < ac[-1] < ac[0] < 1
    # linear β 1e-4 → 0.02: ᾱ_0 = 1 − 1e-4 and ᾱ_999 ≈ 4.0e-5 (Ho et al. 2020)
    assert linear_schedule()[0] == pytest.approx(1 - 1e-4)
    assert linear_schedule()[-1] == pytest.approx(4.04e-5, rel=0.01)


def test_grid_is_strided_descending_and_ends_clean():
    p = Process.make(steps=10)
    assert p.timesteps.tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert p.abar[-1] == 1.0 and len(p.abar) == 11


def test_ddpm_step_is_the_posterior_q_xs_given_xt_x0():
    """η = 1 must reproduce the DDPM posterior mean and variance (Ho et al. eq. 7)."""
    p = Process.make(steps=20, eta=1.0)
    i = 7
    a, a_s = float(p.abar[i]), float(p.abar[i + 1])
    x0 = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    xt = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    xs = p.step(xt, i, eps, torch.Generator().manual_seed(3))
    beta = 1 - a / a_s
    mean = (math.sqrt(a_s) * beta / (1 - a)) * x0 + (math.sqrt(a / a_s) * (1 - a_s) / (1 - a)) * xt
    var = (1 - a_s) / (1 - a) * beta
    resid = xs - mean
    assert float(resid.mean()) == pytest.approx(0, abs=5 * math.sqrt(var / len(x0)))
    assert float(resid.var()) == pytest.approx(var, rel=0.02)


def test_ddim_eta0_is_deterministic_and_exact_on_true_eps():
    """With the true ε, a deterministic DDIM step lands exactly on the forward-process point."""
    p = Process.make(steps=5, eta=0.0)
    x0 = torch.randn(4, 2, dtype=torch.float64)
    eps = torch.randn(4, 2, dtype=torch.float64)
    x = p.abar[0].sqrt() * x0 + (1 - p.abar[0]).sqrt() * eps
    for i in range(5):
        x = p.step(x, i, eps)
        assert torch.allclose(x, p.abar[i + 1].sqrt() * x0 + (1 - p.abar[i + 1]).sqrt() * eps)
    assert torch.allclose(x, x0)


def test_tweedie_inverts_noising():
    p = Process.make(steps=50)
    x0 = torch.randn(8, 3, dtype=torch.float64)
    eps = torch.randn(8, 3, dtype=torch.float64)
    a = p.abar[13]
    assert torch.allclose(p.tweedie(a.sqrt() * x0 + (1 - a).sqrt() * eps, 13, eps), x0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 1001}, "steps"),
        ({"eta": -0.1}, "eta"),
        ({"eta": 1.5}, "eta"),
        ({"schedule": "sigmoid"}, "schedule"),
    ],
)
def test_bad_process_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Process.make(**kwargs)
