"""The phase rule per activation (issue 16 item 4): its Gaussian integrals against Monte Carlo
and closed forms, and the rule that uses them."""

import math

import numpy as np
import pytest

from dysonsgd._checks import InputError
from dysonsgd.analysis import phase
from dysonsgd.theory import phase_rule
from dysonsgd.theory.functions import ACTIVATIONS

# every Monte Carlo comparison below is at |z| < 4.5 (two-sided alpha ~ 7e-6 per comparison)
Z_MAX = 4.5


def test_output_variance_closed_forms():
    # positively homogeneous phi: q_{l+1} = E[phi(z)^2] = q_l / 2 (relu), q_l (identity), exactly
    assert phase_rule.output_variance("relu", input_variance=2.0) == pytest.approx(0.5, rel=1e-12)
    assert phase_rule.output_variance("relu", depth=3) == pytest.approx(1 / 8, rel=1e-12)
    assert phase_rule.output_variance("identity", depth=4) == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_output_variance_against_a_wide_random_teacher(activation):
    # the mean-field claim, simulated: teachers 400-400-400-1 with every weight N(0, 1/fan_in)
    # and x ~ N(0, I); E[y^2] per teacher over 256 inputs, 24 independent teachers give the mean
    # and its SE. Finite width biases the mean-field value by O(1/400) relative, far below the SE.
    rng = np.random.default_rng(11)
    phi = ACTIVATIONS[activation]
    n, per_teacher = 400, []
    for _ in range(24):
        x = rng.standard_normal((256, n))
        h = x
        for _layer in range(2):
            w = rng.standard_normal((n, n)) / math.sqrt(n)
            h = phi(h @ w.T)
        w3 = rng.standard_normal(n) / math.sqrt(n)
        per_teacher.append(np.mean((h @ w3) ** 2))
    m, se = np.mean(per_teacher), np.std(per_teacher, ddof=1) / math.sqrt(len(per_teacher))
    assert abs(m - phase_rule.output_variance(activation)) < Z_MAX * se


@pytest.mark.parametrize("activation,variance", [("tanh", 1.0), ("tanh", 0.3), ("gelu", 1.0),
                                                 ("gelu", 4.0)])
def test_normalised_overlap_against_monte_carlo(activation, variance):
    rng = np.random.default_rng(5)
    phi = ACTIVATIONS[activation]
    c = np.array([0.0, 0.5, 0.9])
    got = phase_rule.normalised_overlap(activation, c, variance=variance)
    u, v = rng.standard_normal((2, 400_000))
    s = math.sqrt(variance)
    a = phi(s * u)
    denom = np.mean(a * a)
    for ci, g in zip(c, got, strict=True):
        prod = a * phi(s * (ci * u + math.sqrt(1 - ci * ci) * v))
        # delta method: the ratio's SE, dominated by the numerator's (the denominator is shared)
        se = np.std(prod / denom - g * a * a / denom) / math.sqrt(u.size)
        assert abs(np.mean(prod) / denom - g) < Z_MAX * se + 1e-12


def test_normalised_overlap_limits():
    # kappa(1) = 1; kappa(0) = E[phi]^2 / E[phi^2]: 0 for odd phi; gelu: E[gelu] = 1/(2 sqrt(pi))
    assert phase_rule.normalised_overlap("tanh", 1.0) == pytest.approx(1.0, abs=1e-12)
    assert phase_rule.normalised_overlap("tanh", 0.0) == pytest.approx(0.0, abs=1e-12)
    e1 = 1 / (2 * math.sqrt(math.pi))
    e2 = phase_rule.second_moment("gelu", 1.0)
    assert phase_rule.normalised_overlap("gelu", 0.0) == pytest.approx(e1 * e1 / e2, rel=1e-9)
    assert phase_rule.normalised_overlap("relu", 0.0) == pytest.approx(1 / math.pi, rel=1e-12)


def test_for_activation_keeps_the_papers_tanh_rule_and_derives_the_others():
    assert phase.PhaseThresholds.for_activation("tanh") == phase.PhaseThresholds()
    relu = phase.PhaseThresholds.for_activation("relu")
    # relu's teacher: E[y^2] = 1/4 exactly, so the ordered level is 1e-3 x 0.125 / 0.118
    tanh_zero_loss = 0.5 * phase_rule.output_variance("tanh")
    assert relu.ordered_loss_max == pytest.approx(1e-3 * 0.125 / tanh_zero_loss, rel=1e-12)
    # memory kept at pre-activation correlation 1/2: kappa = (sqrt(3)/2 + pi/3) / pi
    assert relu.jamming_correlation_min == pytest.approx(
        (math.sqrt(3) / 2 + math.pi / 3) / math.pi, rel=1e-12)
    assert relu.memory == "normalised"
    assert phase.PhaseThresholds.for_activation("identity").jamming_correlation_min == 0.5
    with pytest.raises(InputError, match="activation"):
        phase.PhaseThresholds.for_activation("swish")
    with pytest.raises(InputError, match="memory"):
        phase.PhaseThresholds(memory="scaled")


def test_classify_summary_reads_the_statistic_the_rule_names():
    # one cell of relu models far from sigma_W = 1: the raw G(t_f, 0) = 4 is far above tanh's
    # 0.274 whatever the memory, but the normalised overlap 0.35 is near relu's erased 1/pi
    n = 8
    summary = {"test_loss": np.full((1, 1, n), 0.5), "feature_correlation": np.full((1, 1, n), 4.0),
               "normalised_overlap": np.full((1, 1, n), 0.35),
               "diverged": np.zeros((1, 1, n), bool)}
    assert phase.classify_summary(summary, phase.PhaseThresholds())[0, 0] == "jamming"
    assert phase.classify_summary(summary, activation="relu")[0, 0] == "high-temperature"
    summary["normalised_overlap"][:] = 0.9
    assert phase.classify_summary(summary, activation="relu")[0, 0] == "jamming"
    with pytest.raises(InputError, match="activation"):
        phase.classify_summary(summary)


def test_no_phase_rule_is_transplanted_to_real_data():
    # the digits' labels: the ordered level is a fraction of a teacher's zero-predictor loss
    with pytest.raises(InputError, match="task"):
        phase.PhaseThresholds.for_activation("tanh", task="digits")
    from dysonsgd.runs.validation_config import parse_validation_config

    mapping = {"name": "d", "grid": {"temperature": [0.5], "inv_sigma_w": [8.0], "seeds": 2},
               "training": {"epochs": 2, "task": "digits", "widths": [64, 32, 16, 10],
                            "n_data": 1500, "batch_size": 4},
               "expect": {"phases": [{"temperature": 0.5, "inv_sigma_w": 8.0,
                                      "phase": "ordered"}]}}
    with pytest.raises(InputError, match="task"):
        parse_validation_config(mapping)
