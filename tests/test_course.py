"""The course's graders: every reference answer passes, and every checker rejects the wrong
answers a learner actually writes (nothing, the input back, a value off by 10 %, a crash, a
sampler with the wrong selection or a step of the wrong sign) with a message, never a raise."""

import pytest
import torch

from toycode.course import EXERCISES, CheckResult, check, solution
from toycode.course import samplers as lesson4

# every exercise but the two samplers, whose wrong answers are wrong samplers (tested below)
GRADED = [name for name in EXERCISES if name not in ("code_argmax", "code_softmax")]


def test_every_exercise_names_its_lesson_and_has_a_reference():
    assert {
        "tilted_gaussian",
        "tweedie",
        "ddim_step",
        "bon_kl",
        "code_argmax",
        "code_softmax",
    } <= set(EXERCISES)
    for name, ex in EXERCISES.items():
        assert ex.name == name and ex.lesson >= 1 and callable(solution(name)) and ex.hint


@pytest.mark.parametrize("name", GRADED)
def test_the_reference_answer_passes(name, capsys):
    result = check(name, solution(name))
    assert isinstance(result, CheckResult) and result.passed and result
    assert capsys.readouterr().out.strip() == result.message and "✓" in result.message


def _scaled(fn):
    def answer(*args):
        out = fn(*args)
        return tuple(1.1 * o for o in out) if isinstance(out, tuple) else 1.1 * out

    return answer


def _crash(*args):
    raise RuntimeError("a bug in the learner's code")


def _blank(*args):
    raise NotImplementedError


WRONG = {
    "returns None": lambda *a: None,
    "returns its input": lambda *a: a[0],
    "off by 10 %": "scaled",
    "crashes": _crash,
    "is blank": _blank,
    "is not a function": 3,
}


@pytest.mark.parametrize("name", GRADED)
@pytest.mark.parametrize("how", WRONG)
def test_a_wrong_answer_fails_with_a_message(name, how):
    answer = _scaled(solution(name)) if WRONG[how] == "scaled" else WRONG[how]
    result = check(name, answer, quiet=True)
    assert not result.passed and not result
    assert result.message.startswith(f"✗ {name}") and "Hint:" in result.message
    assert "\n" not in result.message


def test_an_unknown_exercise_is_a_one_line_error():
    with pytest.raises(ValueError, match="no exercise 'nope'"):
        check("nope", print)


def test_a_correct_ddim_step_with_the_noise_sign_flipped_fails():
    right = solution("ddim_step")
    assert check("ddim_step", right, quiet=True).passed
    flipped = lambda x, e, a, s, a2, s2, eta, z: right(x, e, a, s, a2, s2, eta, -z)  # noqa: E731
    assert not check("ddim_step", flipped, quiet=True).passed


@pytest.mark.slow
def test_the_sampler_references_pass():
    assert check("code_argmax", solution("code_argmax"), quiet=True).passed
    assert check("code_softmax", solution("code_softmax"), quiet=True).passed


class _WrongSign:
    """The learner's backend view with a step that moves against ε̂ (a sign slip)."""

    def __init__(self, backend):
        self.backend, self.process = backend, backend.process
        step = backend.process.step
        self.process = type(
            "P",
            (),
            {
                "num_steps": backend.process.num_steps,
                "step": staticmethod(lambda x, t, e, g, x0=None: step(x, t, -e, g)),
            },
        )()

    def __getattr__(self, name):
        return getattr(self.backend, name)


@pytest.mark.parametrize(
    "name, answer, says",
    [
        (
            "code_softmax",
            lambda b, r, n, N, B, lam, g: lesson4.code_loop(b, r, n, N, B, g),
            "standard errors",
        ),  # argmax where softmax asked
        (
            "code_argmax",
            lambda b, r, n, N, B, g: lesson4.code_loop(b, r, n, N, B, g, lam=2.0),
            "standard errors",
        ),  # softmax where argmax asked
        (
            "code_argmax",
            lambda b, r, n, N, B, g: lesson4.code_loop(b, r, n, 1, B, g),
            "denoiser calls",
        ),  # the base model
        (
            "code_argmax",
            lambda b, r, n, N, B, g: lesson4.code_loop(_WrongSign(b), r, n, N, B, g),
            "standard errors",
        ),  # a step of the wrong sign
        (
            "code_argmax",
            lambda b, r, n, N, B, g: 1.1 * lesson4.code_loop(b, r, n, N, B, g),
            "standard errors",
        ),
        ("code_argmax", lambda b, r, n, N, B, g: lesson4.code_loop(b, r, n, N, B, g)[:10], "shape"),
    ],
)
@pytest.mark.slow
def test_a_wrong_sampler_fails_with_a_message(name, answer, says):
    result = check(name, answer, quiet=True)
    assert not result.passed and says in result.message, result.message


@pytest.mark.slow
def test_an_extra_scoring_pass_is_caught_by_the_cost_check():
    """The official CoDe code scores each block with an extra UNet pass: correct law, but
    N·T·(1 + 1/B) calls; the lesson asks for 1 + (T − 1)·N."""

    def wasteful(backend, reward, n, big_n, block, generator):
        backend.predict(backend.prior_sample(n, generator), 0, generator)
        return lesson4.code_loop(backend, reward, n, big_n, block, generator)

    result = check("code_argmax", wasteful, quiet=True)
    assert not result.passed and "denoiser calls per sample" in result.message


@pytest.mark.parametrize(
    "cost",
    [
        lambda T, N, B, v: 1 + (T - 1) * N,  # the Tweedie count for every value
        lambda T, N, B, v: N * T,  # N independent chains (no shared ε̂)
        lambda T, N, B, v: N * T * (1 + 1 / B),  # the official code's count
        lambda T, N, B, v: (T - T // B) * N + T // B,  # ⌊T/B⌋ blocks where there are ⌈T/B⌉
    ],
)
def test_code_nfe_rejects_the_wrong_counts(cost):
    result = check("code_nfe", cost, quiet=True)
    assert not result.passed and "engine's count" in result.message, result.message


def test_checks_do_not_touch_the_global_generator():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    check("bon_kl", solution("bon_kl"), quiet=True)
    assert torch.equal(torch.rand(1), before)


def test_the_frontier_rejects_the_base_mean_and_a_kl_of_the_wrong_sign():
    right = solution("tilt_frontier")

    def base_mean(w, m, c, a, lam):  # E_p[r] where E_p*[r] is asked
        log_z, _, _ = right(w, m, c, a, lam)
        r = w @ (m @ a)
        return log_z, r, lam * r - log_z

    def wrong_sign(w, m, c, a, lam):
        log_z, r, kl = right(w, m, c, a, lam)
        return log_z, r, -kl

    for answer, says in ((base_mean, "E_p*[r]"), (wrong_sign, "KL")):
        result = check("tilt_frontier", answer, quiet=True)
        assert not result.passed and says in result.message, result.message
