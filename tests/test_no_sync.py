"""The rollout and the REINFORCE update read nothing back from the device, per step, on all three environments.

On an accelerator a read (`t.item()`, `t.tolist()`, `t.cpu()`, `bool(t)`, `float(t)`, `int(t)`, ...) makes Python wait
until the device has caught up. On a CPU nothing waits, so this test makes every such read raise instead, while a
CPU `rollout` and `reinforce_update` run. The only reads allowed are the ones made by design, where they are made:
"""
import sys
from collections import Counter
from contextlib import contextmanager

import pytest
import torch

from plainrl.envs.cartpole import CartPole
from plainrl.envs.tabular import slippery_chain
from plainrl.envs.tokens import TokenTask
from plainrl.policy import MLPPolicy, TabularPolicy, TransformerPolicy
from plainrl.reinforce import reinforce_update
from plainrl.trajectory import rollout
from plainrl.variance import MovingAverageBaseline, pg_weights

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
ALLOWED = {  # (module, function) making the read: why it is not a per-step sync on an accelerator
    ("plainrl.policy", "check"): "check() reads on the CPU only; on an accelerator it queues torch._assert_async",
    ("torch.optim.optimizer", "_get_value"): "Adam's step counter is a host tensor, also when training on a GPU",
    ("plainrl.trajectory", "rollout"): "the early stop, tested once every 32 steps, and the final trim (counted)",
}


@contextmanager
def no_host_reads():
    "Make every host read of a tensor raise, except from ALLOWED callers; yields a Counter of the allowed reads."
    allowed, originals = Counter(), {name: getattr(torch.Tensor, name) for name in READS}

    def guard(name):
        original = originals[name]
        def read(self, *args, **kwargs):
            caller = sys._getframe(1)
            where = (caller.f_globals.get("__name__"), caller.f_code.co_name)
            if where not in ALLOWED: raise AssertionError(f"host read Tensor.{name} in {where[0]}.{where[1]}")
            allowed[where] += 1
            return original(self, *args, **kwargs)
        return read

    try:
        for name in READS: setattr(torch.Tensor, name, guard(name))
        yield allowed
    finally:
        for name, original in originals.items(): setattr(torch.Tensor, name, original)


def tabular():
    env = slippery_chain(num_envs=8, device="cpu", seed=0)
    return env, TabularPolicy(env.n_states, env.n_actions, device="cpu")


def cartpole():
    env = CartPole(8, device="cpu", seed=0)
    return env, MLPPolicy(4, env.n_actions, hidden=16, device="cpu")


def tokens():
    env = TokenTask(8, answer_len=2, device="cpu", seed=0)
    return env, TransformerPolicy(env.vocab_size, env.prompt_len + env.answer_len, d_model=16, n_head=2, n_layer=1,
                                  device="cpu")


def test_guard_catches_reads():
    t = torch.ones(2)
    with no_host_reads():
        for read in (lambda: t.sum().item(), lambda: t.tolist(), lambda: t.cpu(), lambda: bool(t.all()),
                     lambda: float(t.sum()), lambda: int(t.sum())):
            with pytest.raises(AssertionError, match="host read"): read()
    assert t.sum().item() == 2.0  # restored


@pytest.mark.parametrize("make", [tabular, cartpole, tokens])
@pytest.mark.parametrize("variant", ["vanilla", "rtg+baseline"])
def test_rollout_and_update_do_not_sync(make, variant):
    torch.manual_seed(0)
    env, policy = make()
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    baseline = MovingAverageBaseline(0.9)
    with no_host_reads() as allowed:
        for _ in range(2):  # the second update also exercises Adam's state and the baseline's history
            traj = rollout(env, policy)
            weights = pg_weights(traj, variant, baseline=baseline)
            loss = reinforce_update(policy, optimizer, traj, weights, max_grad_norm=1.0)
    assert loss.dim() == 0 and not loss.requires_grad and torch.isfinite(loss)
    # the rollout's own reads are amortised: at most one per 32 steps, plus the trim, per rollout
    assert allowed[("plainrl.trajectory", "rollout")] <= 2 * (env.max_steps // 32 + 1)
