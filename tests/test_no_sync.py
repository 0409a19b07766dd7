"""The stages of the engine — rollout, weigh, update — read nothing back from the
device, per step, on all three environments, with each kind of weights.

On an accelerator a read (`t.item()`, `bool(t)`, ...) makes Python wait for the device;
`no_host_reads` (tests/conftest.py) makes every such read raise on the CPU instead,
except the reads made by design (its ALLOWED list)."""

import pytest
import torch
from conftest import no_host_reads

from plainrl.advantages import BASELINES, Weights
from plainrl.engine import Algorithm, update
from plainrl.envs.cartpole import CartPole
from plainrl.envs.tabular import slippery_chain
from plainrl.envs.tokens import TokenTask
from plainrl.policy import MLPPolicy, TabularPolicy, TransformerPolicy
from plainrl.trajectory import rollout


def tabular():
    env = slippery_chain(num_envs=8, device="cpu", seed=0)
    return env, TabularPolicy(env.n_states, env.n_actions, device="cpu")


def cartpole():
    env = CartPole(8, device="cpu", seed=0)
    return env, MLPPolicy(4, env.n_actions, hidden=16, device="cpu")


def tokens():
    env = TokenTask(8, answer_len=3, device="cpu", seed=0, group_size=4, stop=True)
    size = env.prompt_len + env.answer_len
    policy = TransformerPolicy(env.vocab_size, size, 16, 2, 1, device="cpu")
    return env, policy


def test_guard_catches_reads():
    t = torch.ones(2)
    reads = (
        lambda: t.sum().item(),
        lambda: t.tolist(),
        lambda: t.cpu(),
        lambda: bool(t.all()),
        lambda: float(t.sum()),
        lambda: int(t.sum()),
    )
    with no_host_reads():
        for read in reads:
            with pytest.raises(AssertionError, match="host read"):
                read()
    assert t.sum().item() == 2.0  # restored


@pytest.mark.parametrize("make", [tabular, cartpole, tokens])
@pytest.mark.parametrize("baseline", ["none", "moving_average", "leave_one_out"])
def test_sample_weigh_update_do_not_sync(make, baseline):
    torch.manual_seed(0)
    env, policy = make()
    if baseline == "leave_one_out" and env.group_size == 1:
        baseline = "batch_mean"
    assert baseline in BASELINES
    weights = Weights("reward_to_go", baseline)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    algo = Algorithm(max_grad_norm=1.0, minibatches=2)
    with no_host_reads() as allowed:
        for _ in range(2):  # the second update also exercises Adam's state
            traj = rollout(env, policy)
            loss, norm = update(policy, optimizer, traj, weights(traj), algo)
    assert loss.dim() == 0 and not loss.requires_grad and torch.isfinite(loss)
    # the rollout's own reads are amortised: one per 32 steps, plus the trim
    assert allowed[("plainrl.trajectory", "rollout")] <= 2 * (env.max_steps // 32 + 1)
