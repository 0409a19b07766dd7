"""REINFORCE (chapter 6): the update follows eq. 12, raises J(θ) in expectation, and training reaches the optimum."""
import copy
from dataclasses import replace
from itertools import product

import pytest
import torch
import torch.nn.functional as F

from plainrl.envs.tabular import policy_values, slippery_chain
from plainrl.gradient import exact_objective, surrogate_loss
from plainrl.policy import TabularPolicy
from plainrl.reinforce import CONFIGS, Config, optimal_value, reinforce_update, train
from plainrl.trajectory import rollout
from plainrl.variance import pg_weights


def chain_and_policy(num_envs=16, seed=0):
    torch.manual_seed(seed)
    chain = slippery_chain(num_envs=num_envs, device="cpu", seed=seed)
    policy = TabularPolicy(chain.n_states, chain.n_actions, device="cpu")
    with torch.no_grad(): policy.logits.copy_(torch.randn(chain.n_states, chain.n_actions))
    return chain, policy


def sgd_step(policy, traj, alpha):
    "A copy of `policy` after one vanilla REINFORCE step with SGD on `traj`, and the loss."
    policy = copy.deepcopy(policy)
    loss = reinforce_update(policy, torch.optim.SGD(policy.parameters(), lr=alpha), traj, pg_weights(traj, "vanilla"))
    return policy, loss


def test_step_is_alpha_times_the_surrogate_gradient():
    chain, policy = chain_and_policy()
    traj = rollout(chain, policy)
    weights = pg_weights(traj, "vanilla")
    (grad,) = torch.autograd.grad(surrogate_loss(policy(traj.obs).log_prob(traj.actions), weights, traj.mask), policy.logits)
    # eq. 12 by hand for a softmax table: ∇_{θ_s} log π(a|s) = onehot(a) - π(·|s)
    score = F.one_hot(traj.actions, 2) - policy(traj.obs).probs.detach()
    g_hat = torch.zeros(4, 2).index_put_((traj.obs.flatten(),), (score * weights[..., None]).flatten(0, 1),
                                         accumulate=True) / chain.num_envs
    assert torch.allclose(-grad, g_hat, atol=1e-6)
    stepped, loss = sgd_step(policy, traj, alpha=0.1)
    assert torch.allclose(stepped.logits - policy.logits, 0.1 * g_hat, atol=1e-6)
    assert loss.dim() == 0 and not loss.requires_grad


def test_update_raises_J_in_expectation():
    chain, policy = chain_and_policy()
    J0 = exact_objective(chain, policy)
    (exact_grad,) = torch.autograd.grad(J0, policy.logits)
    # the average of many estimates is the estimate from their union: ĝ from 2^15 trajectories ≈ ∇J
    big, _ = sgd_step(policy, rollout(slippery_chain(num_envs=2**15, device="cpu", seed=1), policy), alpha=1.0)
    g = (big.logits - policy.logits).detach()
    assert F.cosine_similarity(g.flatten(), exact_grad.flatten(), dim=0) > 0.99
    gains = []
    for seed in range(100):  # single small-batch steps: noisy, uphill on average
        stepped, _ = sgd_step(policy, rollout(slippery_chain(num_envs=8, device="cpu", seed=seed), policy), alpha=0.05)
        gains.append((exact_objective(chain, stepped) - J0).item())
    gains = torch.tensor(gains)
    assert gains.mean() > 3 * gains.std() / len(gains) ** 0.5


def test_optimal_value_is_the_best_stationary_policy():
    chain = slippery_chain(device="cpu")
    p = torch.linspace(0, 1, 11, dtype=torch.float64)
    grid = torch.cartesian_prod(*[p] * 4)
    assert policy_values(chain, torch.stack([1 - grid, grid], -1)).max() <= optimal_value(chain) + 1e-12
    always_right = F.one_hot(torch.ones(1, 4, dtype=torch.long), 2)
    assert torch.isclose(policy_values(chain, always_right)[0], optimal_value(chain))
    _, policy = chain_and_policy()
    assert torch.isclose(policy_values(chain, policy(torch.arange(4)).probs.detach()[None])[0],
                         exact_objective(chain, policy).double(), atol=1e-5)
    with pytest.raises(ValueError, match="probs must be a tensor"): policy_values(chain, torch.ones(4, 2))


def test_training_reaches_the_optimum():
    cfg = replace(CONFIGS["tabular"], device="cpu", seed=0)
    run = train(cfg)
    chain = slippery_chain(device="cpu")
    J = exact_objective(chain, run.policy).item()
    assert run.solved_at == len(run.rows) and run.solved_at < cfg.max_updates
    assert abs(J - optimal_value(chain).item()) <= cfg.tolerance
    assert run.rows[-1]["objective"] == pytest.approx(J, abs=1e-5)
    assert list(run.rows[-1]) == ["update", "env_steps", "wall_s", "return", "loss", "objective"]


def test_training_is_deterministic_by_seed():
    cfg = replace(CONFIGS["tabular"], device="cpu", max_updates=20, stop_when_solved=False)
    without_time = lambda run: [{k: v for k, v in row.items() if k != "wall_s"} for row in run.rows]
    first, again, other = train(cfg), train(cfg), train(replace(cfg, seed=1))
    assert without_time(first) == without_time(again)
    assert torch.equal(first.policy.logits, again.policy.logits)
    assert without_time(first) != without_time(other)


def test_budget_stops_training():
    run = train(replace(CONFIGS["tabular"], device="cpu", max_env_steps=3 * 64 * 4))
    assert len(run.rows) == 3 and run.solved_at is None and run.rows[-1]["env_steps"] == 3 * 64 * 4


@pytest.mark.parametrize("bad, match", [(dict(env="atari"), "env must be one of"),
                                        (dict(variant="ppo"), "variant must be one of"),
                                        (dict(num_envs=0), "num_envs must be a positive int"),
                                        (dict(lr=-1.0), "lr must be > 0"), (dict(gamma=1.5), "gamma must lie")])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match): Config(**bad)
