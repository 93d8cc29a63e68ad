"""Lesson 8's graders (toycode/course/flow.py): every reference passes; every checker rejects
the wrong answers of tests/test_course.py and the flow-matching slips learners make (the
velocity of the other convention, x0 − ε; the base ε̂ where the velocity is asked; the VP
Tweedie where the flow path is asked; an Euler step of the wrong sign or of the wrong length)."""

import pytest
import torch

from toycode.course import EXERCISES, check, solution
from toycode.course import flow as lesson8
from toycode.course.closed_forms import mixture_score

LESSON8 = [name for name, ex in EXERCISES.items() if ex.lesson == 8]


def test_lesson_8_has_its_exercises():
    assert set(LESSON8) == {"velocity_from_eps", "exact_velocity", "euler_flow_step"}


def _vp_velocity(w, m, c, x, t):  # the VP level (√(1−t²)...) in place of the flow path's
    a, s = (1 - t * t) ** 0.5, t
    eps = -s * mixture_score(w, m, c, x, a, s)
    return eps - (x - s * eps) / a


@pytest.mark.parametrize(
    "name, answer",
    [
        ("velocity_from_eps", lambda x, e, t: -lesson8.velocity_from_eps(x, e, t)),  # x0 − ε
        ("velocity_from_eps", lambda x, e, t: e),  # ε̂ itself
        ("velocity_from_eps", lambda x, e, t: e - (x - t * e)),  # no 1/(1−t)
        ("exact_velocity", lambda w, m, c, x, t: -lesson8.exact_velocity(w, m, c, x, t)),
        ("exact_velocity", lambda w, m, c, x, t: -t * mixture_score(w, m, c, x, 1 - t, t)),
        ("exact_velocity", _vp_velocity),
        ("euler_flow_step", lambda x, v, t, t2: x - (t2 - t) * v),  # wrong sign
        ("euler_flow_step", lambda x, v, t, t2: x + t2 * v),  # wrong length
        (
            "euler_flow_step",
            lambda x, v, t, t2: x + (t2 - t) * v + 0.01 * torch.randn_like(x),
        ),  # not the ODE
    ],
)
def test_a_flow_slip_fails_with_a_message(name, answer):
    result = check(name, answer, quiet=True)
    assert not result.passed and "exact value" in result.message, result.message


def test_a_step_with_the_sign_flipped_fails_and_the_right_one_passes():
    right = solution("euler_flow_step")
    assert check("euler_flow_step", right, quiet=True).passed
    flipped = lambda x, v, t, t2: right(x, -v, t, t2)  # noqa: E731
    assert not check("euler_flow_step", flipped, quiet=True).passed


@pytest.mark.slow
def test_the_euler_step_is_the_libraries_eta_zero_step_and_diffusers_flow_euler():
    """The reference answer is diffusers' FlowMatchEulerDiscreteScheduler.step on its own grid."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler()
    sched.set_timesteps(8)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, generator=g)
    for k, t in enumerate(sched.timesteps[:4]):
        v = torch.randn(3, 4, generator=g)
        want = sched.step(v, t, x).prev_sample
        got = solution("euler_flow_step")(x, v, float(sched.sigmas[k]), float(sched.sigmas[k + 1]))
        assert torch.allclose(got, want, atol=1e-6)
        x = want
