"""Proof that the checks of probdiff.testing can fail: correct processes with one planted error each.

Every identity of ``probdiff.testing.IDENTITIES`` is tripped by a planted error below (``PLANTED``, one
per identity), and ``check_process`` names the broken identity.
"""

import pyro.distributions as dist
import pytest
import torch

import probdiff as pd
from probdiff import testing as pt
from probdiff import expand_like as _expand
from probdiff.processes import ForwardSDE

def _fails(identity, call):
    """``call()`` must raise an AssertionError naming ``identity``; returns the message."""
    with pytest.raises(AssertionError, match=identity.name.replace("(", r"\(").replace(")", r"\)")) as info:
        call()
    assert isinstance(info.value, pt.IdentityError) and info.value.identity is identity
    return str(info.value)


# ==================================================================== planted Gaussian errors
class WrongPosteriorVariance(pd.VPSDE):
    """Posterior standard deviation 1.5 times too large."""

    def posterior(self, x0, xt, s, t):
        d = super().posterior(x0, xt, s, t)
        return self._normal(d.mean, 1.5 * d.stddev, x0.dim() - 1)


class DriftSignError(pd.VPSDE):
    """f = +beta/2 instead of -beta/2."""

    def drift_coef(self, t):
        return 0.5 * self.beta(t)


class TransitionIgnoresS(pd.VPSDE):
    """q(x_t | x_s) = N(alpha_t x_s, sigma_t^2): the marginal formula applied to x_s."""

    def transition(self, xs, s, t):
        s, t = self.check_times(s, t, xs)
        return self._normal(_expand(self.alpha(t), xs) * xs, _expand(self.sigma(t), xs).expand_as(xs), xs.dim() - 1)


class PriorWrongScale(pd.VPSDE):
    """Reference N(0, (2 sigma_{t_max})^2) and sample_prior drawing from it."""

    def prior(self, event_shape, *, device=None, dtype=None):
        d = super().prior(event_shape, device=device, dtype=dtype)
        return self._normal(d.mean, 2.0 * d.stddev, len(event_shape))

    def sample_prior(self, num_samples, event_shape, *, generator=None, device=None, dtype=None):
        return 2.0 * super().sample_prior(num_samples, event_shape, generator=generator, device=device, dtype=dtype)


class MissingToEvent(pd.VESDE):
    """marginal forgets .to_event: batch_shape (batch, *event) instead of (batch,)."""

    def marginal(self, x0, t):
        d = super().marginal(x0, t)
        return dist.Normal(d.mean, d.stddev)


class NoValidation(pd.LinearBlend):
    """Accepts any time: out-of-range t silently extrapolates the schedule."""

    def _check_time(self, t, name="t"):
        return None


class WrongMarginalScale(pd.VPSDE):
    """marginal uses 1.1 sigma_t while sigma(t) (and so the score target) says sigma_t."""

    def marginal(self, x0, t):
        d = super().marginal(x0, t)
        return self._normal(d.mean, 1.1 * d.stddev, x0.dim() - 1)


class WrongAlphaDot(pd.LinearBlend):
    """alpha_dot = -1.1 while alpha = 1 - t."""

    def alpha_dot(self, t):
        return torch.full_like(torch.as_tensor(t), -1.1)


class InconsistentLogAlpha(pd.LinearBlend):
    """alpha = 1 - t but log_alpha = log(1 - 0.9 t): two declarations that disagree.

    Both are declared here: a subclass that redeclared only log_alpha would get the generic
    alpha = exp(log_alpha), consistent by construction (closed forms are bound to their schedule)."""

    def alpha(self, t):
        return 1.0 - torch.as_tensor(t)

    def log_alpha(self, t):
        return torch.log1p(-0.9 * torch.as_tensor(t))


class WrongSDEModule(pd.CosineVP):
    """Every coefficient is right, but sde() simulates with diffusion 1.2 g."""

    def sde(self):
        return _ScaledSDE(self)


class _ScaledSDE(ForwardSDE):
    def g(self, t, y):
        return 1.2 * super().g(t, y)


def test_wrong_posterior_variance_breaks_bayes():
    p = WrongPosteriorVariance()
    msg = _fails(pt.BAYES, lambda: pt.check_process(p))
    assert "log q(x_s|x_t,x_0)" in msg and "tolerance" in msg and "s = " in msg and "t = " in msg


def test_drift_sign_error_breaks_coefficients_simulation_and_reverse():
    p = DriftSignError()
    msg = _fails(pt.COEFFICIENTS, lambda: pt.check_process(p))
    assert "drift_coef" in msg
    _fails(pt.CLOSED_FORMS, lambda: pt.assert_closed_forms(p))
    _fails(pt.SIMULATION, lambda: pt.assert_simulation(p))
    _fails(pt.REVERSE_MARGINALS, lambda: pt.assert_reverse_marginals(p))


def test_transition_ignoring_s_breaks_chapman_kolmogorov():
    p = TransitionIgnoresS()
    _fails(pt.CHAPMAN_KOLMOGOROV, lambda: pt.check_process(p))
    _fails(pt.BAYES, lambda: pt.assert_bayes(p))


def test_prior_with_wrong_scale_breaks_prior():
    p = PriorWrongScale()
    msg = _fails(pt.PRIOR, lambda: pt.check_process(p))
    assert "KL" in msg
    # the sample_prior half of the check on its own: prior and sample_prior agree with each other but
    # not with the marginal, so the KL part fails first; a sample_prior off from prior is caught too
    class SamplePriorOnly(pd.VPSDE):
        def sample_prior(self, num_samples, event_shape, *, generator=None, device=None, dtype=None):
            return 2.0 * super().sample_prior(num_samples, event_shape, generator=generator, device=device,
                                              dtype=dtype)

    msg = _fails(pt.PRIOR, lambda: pt.assert_prior(SamplePriorOnly()))
    assert "sample_prior" in msg


def test_missing_to_event_breaks_shape_law():
    msg = _fails(pt.SHAPES, lambda: pt.check_process(MissingToEvent()))
    assert "batch_shape" in msg


def test_missing_validation_is_caught():
    msg = _fails(pt.BAD_INPUT, lambda: pt.check_process(NoValidation()))
    assert "expected ValueError" in msg


def test_marginal_inconsistent_with_schedule_breaks_score_target():
    _fails(pt.SCORE, lambda: pt.assert_score(WrongMarginalScale()))


def test_wrong_alpha_dot_is_caught():
    msg = _fails(pt.COEFFICIENTS, lambda: pt.check_process(WrongAlphaDot()))
    assert "alpha_dot" in msg
    _fails(pt.CLOSED_FORMS, lambda: pt.assert_closed_forms(WrongAlphaDot()))


def test_inconsistent_declarations_break_closed_forms():
    msg = _fails(pt.CLOSED_FORMS, lambda: pt.assert_closed_forms(InconsistentLogAlpha()))
    assert "alpha" in msg


def test_wrong_sde_module_is_caught_only_by_simulation():
    report = pt.check_process(WrongSDEModule(), raise_on_failure=False)
    assert [r.identity for r in report.failures] == [pt.SIMULATION]
    _fails(pt.SIMULATION, report.raise_if_failed)


def test_failure_message_names_worst_input():
    with pytest.raises(AssertionError) as info:
        pt.assert_bayes(WrongPosteriorVariance(), torch.zeros(3, 2, dtype=torch.float64),
                        torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), 0.9)
    msg = str(info.value)
    assert msg.startswith("Bayes identity violated by WrongPosteriorVariance")
    assert "worst input (sample" in msg and "observed" in msg and "expected" in msg and "> tolerance" in msg


# ==================================================================== planted Markov-chain errors
def test_generator_rows_not_summing_to_zero_are_rejected_by_the_constructor():
    bad = torch.tensor([[-1.0, 1.0, 0.0], [0.5, -0.4, 0.0], [0.0, 1.0, -1.0]])
    with pytest.raises(ValueError, match="rows must sum to 0"):
        pd.MarkovChain(bad)


class LeakyChain(pd.MarkovChain):
    """Generator rows sum to -0.2 (mass leaks), smuggled past the constructor's validation (generic paths: the
    matrix exponential of the leaky generator)."""

    def __init__(self):
        super().__init__(pd.UniformChain(3).generator, t_max=10.0)
        self._R = self._R - 0.2 * torch.eye(3, dtype=torch.float64)


class ChainTransitionIgnoresS(pd.UniformChain):
    """q(x_t | x_s) = row x_s of P(t_min, t) instead of P(s, t)."""

    def transition(self, xs, s, t):
        s, t = self.check_times(s, t, xs)
        logits = self._from_data(t, log=True).rows(self._index(xs)).to(t.dtype)
        return self._categorical(logits, xs.dim() - 1)


class BlackoutWrongKeepProbability(pd.Blackout):
    """marginal uses Bin(n_0, e^{-1.2 t}) while the death rate is 1."""

    def marginal(self, x0, t):
        from probdiff.processes.blackout import _log1m_exp

        self.check_states("x0", x0)
        t = 1.2 * self.check_time(t, x0)
        return self._counts(torch.zeros_like(x0), x0, self._expand(-t, x0), self._expand(_log1m_exp(t), x0),
                            x0.dim() - 1)


class ReverseRatesWithoutRatio(pd.AbsorbingChain):
    """Reverse rates R_t(y -> x) without the posterior ratio q_t(y|x_0)/q_t(x|x_0)."""

    def reverse_rates(self, x0_probs, x, t):
        t = self.check_time(t, x)
        from probdiff.processes.matrices import with_diagonal as _with_diagonal

        into_x = self.generator.to(x0_probs.dtype).T[x.long()] * self.beta(t).to(x0_probs.dtype).reshape(
            -1, *([1] * x.dim()))
        return _with_diagonal(into_x, x)


class DeclaredGeneratorDisagrees(pd.UniformChain):
    """The public ``generator`` is twice the rates the chain actually uses."""

    @property
    def generator(self):
        return 2.0 * super().generator


def test_leaky_generator_breaks_generator_law():
    msg = _fails(pt.GENERATOR, lambda: pt.check_process(LeakyChain()))
    assert "row sums of rate(t)" in msg


def test_chain_transition_ignoring_s_breaks_chapman_kolmogorov():
    _fails(pt.CHAPMAN_KOLMOGOROV, lambda: pt.check_process(ChainTransitionIgnoresS(3)))
    _fails(pt.BAYES, lambda: pt.assert_bayes(ChainTransitionIgnoresS(3)))


def test_wrong_blackout_binomial_is_caught():
    p = BlackoutWrongKeepProbability(max_count=4)
    _fails(pt.CHAPMAN_KOLMOGOROV, lambda: pt.check_process(p))
    msg = _fails(pt.CLOSED_FORMS, lambda: pt.assert_closed_forms(p))
    assert "Blackout" in msg and "marginal" in msg


def test_reverse_rates_without_ratio_break_time_reversal():
    msg = _fails(pt.REVERSE_MARGINALS, lambda: pt.check_process(ReverseRatesWithoutRatio(4)))
    assert "R_hat" in msg


def test_declared_generator_disagreeing_with_rates_is_caught_by_jump_simulation():
    report = pt.check_process(DeclaredGeneratorDisagrees(3), raise_on_failure=False)
    assert [r.identity for r in report.failures] == [pt.SIMULATION]
    _fails(pt.SIMULATION, report.raise_if_failed)


# one planted error per identity, checked by that identity's own assert function
PLANTED = {
    pt.SHAPES.name: (MissingToEvent, pt.assert_shapes),
    pt.BAD_INPUT.name: (NoValidation, pt.assert_rejects_bad_input),
    pt.GENERATOR.name: (LeakyChain, pt.assert_generator),
    pt.CHAPMAN_KOLMOGOROV.name: (TransitionIgnoresS, pt.assert_chapman_kolmogorov),
    pt.BAYES.name: (WrongPosteriorVariance, pt.assert_bayes),
    pt.SCORE.name: (WrongMarginalScale, pt.assert_score),
    pt.COEFFICIENTS.name: (DriftSignError, pt.assert_coefficients),
    pt.PRIOR.name: (PriorWrongScale, pt.assert_prior),
    pt.CLOSED_FORMS.name: (InconsistentLogAlpha, pt.assert_closed_forms),
    pt.SIMULATION.name: (WrongSDEModule, pt.assert_simulation),
    pt.REVERSE_MARGINALS.name: (lambda: ReverseRatesWithoutRatio(4), pt.assert_reverse_marginals),
}


def test_every_identity_has_a_planted_error():
    assert set(PLANTED) == {i.name for i in pt.IDENTITIES}


@pytest.mark.parametrize("identity", pt.IDENTITIES, ids=lambda i: i.name)
def test_each_identity_trips_on_its_planted_error(identity):
    make, check = PLANTED[identity.name]
    _fails(identity, lambda: check(make()))


# ==================================================================== small planted errors (issue 18)
class PosteriorVarianceOffByTenthOfAPercent(pd.VPSDE):
    """Posterior variance 1.001 times the true one."""

    def posterior(self, x0, xt, s, t):
        d = super().posterior(x0, xt, s, t)
        return self._normal(d.mean, 1.001 ** 0.5 * d.stddev, x0.dim() - 1)


class DriftOffOnATenth(pd.VPSDE):
    """f(t) 0.1 % too large on [0.45, 0.55], a tenth of the time interval; alpha and sigma are right."""

    def drift_coef(self, t):
        f = super().drift_coef(t)
        t = torch.as_tensor(t, dtype=f.dtype)
        return torch.where((t >= 0.45) & (t <= 0.55), 1.001 * f, f)


class RateOffByOnePercent(pd.UniformChain):
    """rate(t) 1 % too large while the transition matrices are those of the true rate."""

    def rate(self, t):
        return 1.01 * super().rate(t)


class NegativeTransitionProbabilities(pd.UniformChain):
    """A closed form that yields negative probabilities: the Categorical it builds fails Pyro's validation."""

    def marginal(self, x0, t):
        probs = torch.tensor([-0.1, 1.1], dtype=torch.float64)
        return dist.Categorical(probs=probs, validate_args=True)


def test_posterior_variance_off_by_a_tenth_of_a_percent_breaks_bayes():
    _fails(pt.BAYES, lambda: pt.check_process(PosteriorVarianceOffByTenthOfAPercent()))


def test_drift_off_by_a_tenth_of_a_percent_on_a_tenth_of_the_interval_is_caught():
    msg = _fails(pt.COEFFICIENTS, lambda: pt.check_process(DriftOffOnATenth()))
    assert "drift_coef" in msg
    _fails(pt.CLOSED_FORMS, lambda: pt.assert_closed_forms(DriftOffOnATenth()))


def test_chain_rate_off_by_one_percent_breaks_generator_law():
    msg = _fails(pt.GENERATOR, lambda: pt.check_process(RateOffByOnePercent(3)))
    assert "expm" in msg


def test_invalid_closed_form_is_a_report_entry_not_an_exception():
    report = pt.check_process(NegativeTransitionProbabilities(3), raise_on_failure=False)
    assert not report.passed and pt.SHAPES in {r.identity for r in report.failures}
    assert all(isinstance(r.error, pt.IdentityError) for r in report.failures)
    assert "raised ValueError" in report.failures[0].message
    # raising mode: an IdentityError (an AssertionError) naming the check, the Pyro error as its cause
    with pytest.raises(pt.IdentityError) as info:
        pt.check_process(NegativeTransitionProbabilities(3))
    assert isinstance(info.value.__cause__, ValueError)


def test_every_failure_of_a_broken_process_is_reported_without_raising():
    class Everything(pd.UniformChain):
        def marginal(self, x0, t):
            raise RuntimeError("boom")

        def transition(self, xs, s, t):
            raise RuntimeError("boom")

    report = pt.check_process(Everything(3), raise_on_failure=False)
    assert report.failures and not report.passed
