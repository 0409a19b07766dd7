"""plainrl.objective and plainrl.losses (chapter 5): the exact objective by enumeration,
the per-token loss of eq. 12 and its three aggregations."""

import pytest
import torch

from plainrl.envs.tabular import TabularMDP, slippery_chain
from plainrl.losses import AGGREGATIONS, reinforce_loss, seq_mean, seq_sum, token_mean
from plainrl.objective import exact_objective, tabular_batch_gradients
from plainrl.policy import TabularPolicy
from plainrl.reward import episode_return
from plainrl.trajectory import rollout


def random_policy(mdp, seed=0):
    policy = TabularPolicy(mdp.n_states, mdp.n_actions, device="cpu")
    with torch.no_grad():
        policy.logits.copy_(
            torch.randn(
                mdp.n_states,
                mdp.n_actions,
                generator=torch.Generator().manual_seed(seed),
            )
        )
    return policy


def test_exact_objective_of_a_one_step_mdp_by_hand():
    # one state, two actions; action 1 pays 1 with probability 0.5, action 0 pays 2
    transition = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]])
    reward = torch.tensor([[[2.0, 2.0], [0.0, 1.0]], [[2.0, 2.0], [0.0, 1.0]]])
    mdp = TabularMDP([1.0, 0.0], transition, reward, horizon=1, device="cpu")
    policy = random_policy(mdp)
    p = policy.logits.softmax(-1)[0]
    expected = p[0] * 2.0 + p[1] * 0.5
    assert torch.allclose(exact_objective(mdp, policy), expected)


def test_exact_objective_gradient_matches_finite_differences():
    mdp = slippery_chain(device="cpu")
    policy = random_policy(mdp, seed=1)
    (grad,) = torch.autograd.grad(exact_objective(mdp, policy), policy.logits)
    policy64 = TabularPolicy(mdp.n_states, mdp.n_actions, device="cpu").double()
    h = 1e-4
    for s in range(mdp.n_states):
        for a in range(mdp.n_actions):
            values = []
            for step in (h, -h):
                with torch.no_grad():
                    policy64.logits.copy_(policy.logits)
                    policy64.logits[s, a] += step
                    values.append(exact_objective(mdp, policy64))
            assert abs((values[0] - values[1]) / (2 * h) - grad[s, a]) < 1e-5


def test_exact_objective_with_discount_matches_monte_carlo():
    mdp = slippery_chain(device="cpu")
    policy = random_policy(mdp, seed=2)
    traj = rollout(slippery_chain(num_envs=50_000, device="cpu", seed=3), policy)
    returns = episode_return(traj.rewards, 0.5, traj.mask)
    assert (
        abs(returns.mean() - exact_objective(mdp, policy, gamma=0.5))
        < 4 * returns.std() / 50_000**0.5
    )


def surrogate_loss(log_probs, weights, mask=None):
    "Eq. 12's surrogate loss: per-token losses summed over steps, averaged over τ."
    return seq_sum(reinforce_loss(log_probs, weights), mask)


def test_surrogate_loss_value_and_gradient():
    log_probs = torch.tensor(
        [[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]], requires_grad=True
    )
    weights = torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 100.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss = surrogate_loss(log_probs, weights, mask)
    assert torch.isclose(loss, torch.tensor(-(-1 - 4 - 9 - 2 - 2) / 2))
    loss.backward()
    assert torch.equal(log_probs.grad, -weights * mask / 2)


def test_surrogate_loss_detaches_weights_and_ignores_padding():
    log_probs = torch.tensor([[-1.0, float("-inf")]], requires_grad=True)
    weights = torch.tensor([[2.0, 3.0]], requires_grad=True)
    loss = surrogate_loss(log_probs, weights, torch.tensor([[True, False]]))
    assert torch.isfinite(loss)
    loss.backward()
    assert weights.grad is None and torch.equal(
        log_probs.grad, torch.tensor([[-2.0, 0.0]])
    )


def test_surrogate_gradient_is_unbiased_for_the_exact_gradient():
    mdp = slippery_chain(device="cpu")
    policy = random_policy(mdp, seed=4)
    (exact,) = torch.autograd.grad(exact_objective(mdp, policy), policy.logits)
    torch.manual_seed(0)
    traj = rollout(slippery_chain(num_envs=40 * 2000, device="cpu", seed=5), policy)
    weights = episode_return(traj.rewards, mask=traj.mask)[:, None].expand_as(
        traj.rewards
    )
    estimates = tabular_batch_gradients(policy, traj, weights, n_batches=40)
    se = estimates.std(0) / 40**0.5
    assert ((estimates.mean(0) - exact).abs() < 4.5 * se).all()


def test_tabular_batch_gradients_bad_batches():
    mdp = slippery_chain(device="cpu")
    policy = random_policy(mdp)
    traj = rollout(slippery_chain(num_envs=6, device="cpu"), policy)
    for bad in (4, 0, 2.0):
        with pytest.raises((TypeError, ValueError), match="n_batches"):
            tabular_batch_gradients(policy, traj, traj.rewards, bad)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((torch.zeros(4, 5), torch.zeros(4, 1)), ValueError, "weights has shape"),
        ((torch.zeros(5), torch.zeros(5)), ValueError, r"expected \[B, T\]"),
        ((torch.zeros(0, 5), torch.zeros(0, 5)), ValueError, r"expected \[B, T\]"),
        (
            (torch.zeros(4, 5), torch.zeros(4, 5, dtype=torch.long)),
            TypeError,
            "floating-point",
        ),
        (
            (torch.zeros(4, 5, dtype=torch.long), torch.zeros(4, 5)),
            TypeError,
            "floating-point",
        ),
        ((torch.zeros(4, 5), torch.zeros(4, 5), torch.ones(4, 5)), TypeError, "bool"),
        (
            (torch.zeros(4, 5), torch.zeros(4, 5), torch.ones(4, 4, dtype=torch.bool)),
            ValueError,
            "mask has shape",
        ),
        ((torch.zeros(1, 2), [[1.0, 2.0]]), TypeError, "torch.Tensor"),
    ],
)
def test_surrogate_loss_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        surrogate_loss(*args)


def test_exact_objective_bad_input():
    with pytest.raises(TypeError, match="TabularMDP"):
        exact_objective(object(), TabularPolicy(4, 2, device="cpu"))
    with pytest.raises(ValueError, match="actions"):
        exact_objective(slippery_chain(device="cpu"), TabularPolicy(4, 3, device="cpu"))


def test_reinforce_loss_is_per_token():
    log_probs = torch.tensor([[-1.0, -2.0], [-3.0, -4.0]])
    weights = torch.tensor([[1.0, 0.5], [2.0, -1.0]])
    assert torch.equal(reinforce_loss(log_probs, weights), -log_probs * weights)


def test_aggregations_weigh_short_and_long_answers_as_documented():
    # answers of 1 and 3 real tokens: the gradient's weight on one token of each
    log_probs = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[True, False, False], [True, True, True]])
    expected = {
        "seq_sum": (1 / 2, 1 / 2),
        "seq_mean": (1 / 2, 1 / 6),
        "token_mean": (1 / 4, 1 / 4),
    }
    for name, aggregate in AGGREGATIONS.items():
        (g,) = torch.autograd.grad(
            aggregate(reinforce_loss(log_probs, -torch.ones(2, 3)), mask), log_probs
        )
        short, long = expected[name]
        assert torch.allclose(g[0], torch.tensor([short, 0.0, 0.0]))
        assert torch.allclose(g[1], torch.full((3,), long))
    assert set(AGGREGATIONS) == {"seq_sum", "seq_mean", "token_mean"}


def test_aggregations_agree_when_every_answer_has_the_same_length():
    per_token = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    T = per_token.shape[1]
    assert torch.isclose(seq_sum(per_token), T * seq_mean(per_token))
    assert torch.isclose(seq_mean(per_token), token_mean(per_token))


@pytest.mark.parametrize("aggregate", [seq_sum, seq_mean, token_mean])
def test_aggregations_ignore_padding_even_when_it_is_inf(aggregate):
    per_token = torch.tensor([[1.0, float("inf")], [2.0, 3.0]])
    mask = torch.tensor([[True, False], [True, True]])
    assert torch.isfinite(aggregate(per_token, mask))
    with pytest.raises(ValueError, match="gap"):
        aggregate(per_token, torch.tensor([[False, True], [True, True]]))
