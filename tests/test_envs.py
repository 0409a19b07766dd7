"""Chapter 3: the tabular MDP, CartPole and rollout (bad input, frozen copies, masks, devices, seeds)."""
import math
from itertools import product

import pytest
import torch
from torch.distributions import Categorical

from plainrl.envs.cartpole import CartPole
from plainrl.envs.tabular import TabularMDP, policy_values, slippery_chain
from plainrl.envs.tokens import TokenTask
from plainrl.policy import MLPPolicy, TabularPolicy, TransformerPolicy
from plainrl.trajectory import Trajectory, rollout

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def random_mdp(S=3, A=2, horizon=5, num_envs=1, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    initial = torch.rand(S, generator=g)
    transition = torch.rand(S, A, S, generator=g)
    return TabularMDP(initial / initial.sum(), transition / transition.sum(-1, keepdim=True),
                      torch.randn(S, A, S, generator=g), horizon, num_envs=num_envs, device=device, seed=seed)


def uniform(n_actions):
    "A policy that ignores the state: uniform over `n_actions`, on any batch of states."
    return lambda obs: Categorical(logits=torch.zeros(obs.shape[0], n_actions, device=obs.device))


# ---------------------------------------------------------------- tabular MDP

P2 = torch.full((2, 2, 2), 0.5)
R2 = torch.zeros(2, 2, 2)


@pytest.mark.parametrize("args, error, message", [
    (([0.5, 0.6], P2, R2, 3), ValueError, "initial must sum to 1"),
    (([1.5, -0.5], P2, R2, 3), ValueError, "initial has negative"),
    (([1.0, 0.0], torch.full((2, 2, 2), 0.6), R2, 3), ValueError, "transition must sum to 1"),
    (([1.0, 0.0], P2.clone().index_fill_(2, torch.tensor([0]), math.nan), R2, 3), ValueError, "transition has NaN"),
    (([1.0, 0.0], torch.full((2, 2, 3), 1 / 3), R2, 3), ValueError, r"transition has shape \[2, 2, 3\]"),
    (([1.0, 0.0], torch.full((3, 2, 2), 0.5), R2, 3), ValueError, r"expected \[S, A, S\] = \[2, 2, 2\]"),
    (([1.0, 0.0], P2, torch.zeros(2, 2), 3), ValueError, "reward has shape"),
    (([1.0, 0.0], P2, torch.zeros(2, 3, 2), 3), ValueError, "reward has shape"),
    (([1.0, 0.0], P2, torch.full((2, 2, 2), math.inf), 3), ValueError, "reward has NaN or infinite"),
    (([[1.0, 0.0]], P2, R2, 3), ValueError, "initial has shape"),
    (("abc", P2, R2, 3), TypeError, "initial must be a tensor"),
    (([1.0, 0.0], P2, R2, 0), ValueError, "horizon must be a positive int"),
    (([1.0, 0.0], P2, R2, 2.5), TypeError, "horizon must be a positive int"),
    (([1.0, 0.0], P2, R2, True), TypeError, "horizon must be a positive int"),
])
def test_tabular_bad_input(args, error, message):
    with pytest.raises(error, match=message): TabularMDP(*args, device="cpu")


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_envs=0), ValueError, "num_envs"), (dict(num_envs=2.0), TypeError, "num_envs"),
    (dict(seed="0"), TypeError, "seed"), (dict(device="gpu"), ValueError, "not a device"),
])
def test_tabular_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message): TabularMDP([1.0, 0.0], P2, R2, 3, **{"device": "cpu", **kwargs})


def test_tabular_bad_actions_and_order():
    mdp = random_mdp(num_envs=4)
    with pytest.raises(RuntimeError, match="reset"): mdp.step(torch.zeros(4, dtype=torch.long))
    mdp.reset()
    for action, error, message in [(torch.zeros(3, dtype=torch.long), ValueError, r"expected \[4\]"),
                                   (torch.zeros(4), TypeError, "integer"), ([0, 0, 0, 0], TypeError, "torch.Tensor"),
                                   (torch.full((4,), 2), ValueError, r"\[0, 2\)"), (torch.full((4,), -1), ValueError, r"\[0, 2\)")]:
        with pytest.raises(error, match=message): mdp.step(action)


def test_tabular_sampling_matches_the_tables():
    N = 40_000
    mdp = random_mdp(S=4, A=2, num_envs=N, seed=1)
    s0 = mdp.reset()
    action = torch.randint(2, (N,), generator=torch.Generator().manual_seed(0))
    s1, reward, terminated, truncated = mdp.step(action)
    for sampled, probs in [(s0, mdp.initial), (s1[(s0 == 2) & (action == 1)], mdp.transition[2, 1])]:
        freq = torch.bincount(sampled, minlength=4) / len(sampled)
        assert ((freq - probs).abs() <= 4 * (probs * (1 - probs) / len(sampled)).sqrt() + 1e-9).all()
    assert torch.equal(reward, mdp.reward[s0, action, s1])  # eq. 2: r_t = R(s_t, a_t, s_t+1)
    assert reward.dtype == torch.float32 and s1.dtype == torch.long


def test_tabular_never_samples_a_state_of_probability_zero():
    initial = torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0])
    transition = torch.zeros(5, 1, 5)
    transition[:, 0, 1], transition[:, 0, 3] = 0.3, 0.7
    mdp = TabularMDP(initial, transition, torch.zeros(5, 1, 5), horizon=3, num_envs=50_000, device="cpu")
    states = [mdp.reset()] + [mdp.step(torch.zeros(50_000, dtype=torch.long))[0] for _ in range(3)]
    assert all(((s == 1) | (s == 3)).all() for s in states)


def test_tabular_horizon_truncates_then_freezes():
    mdp = random_mdp(horizon=3, num_envs=5)
    mdp.reset()
    action = torch.ones(5, dtype=torch.long)
    for t in range(1, 4):
        _, _, terminated, truncated = mdp.step(action)
        assert not terminated.any() and truncated.all() == (t == 3) and truncated.any() == (t == 3)
    final = mdp.state
    for _ in range(2):
        s, reward, terminated, truncated = mdp.step(action)
        assert torch.equal(s, final) and not reward.any() and not (terminated | truncated).any()
    assert mdp.max_steps == mdp.horizon == 3


def test_tabular_reproducible_by_seed_and_independent_of_global_rng():
    def run(seed, global_seed):
        torch.manual_seed(global_seed)
        mdp = random_mdp(num_envs=64, seed=0)
        mdp.generator.manual_seed(seed)
        states = [mdp.reset()]
        for _ in range(5): states.append(mdp.step(torch.ones(64, dtype=torch.long))[0])
        return torch.stack(states)
    assert torch.equal(run(3, 0), run(3, 1))
    assert not torch.equal(run(3, 0), run(4, 0))
    a, b = slippery_chain(num_envs=100, device="cpu", seed=7), slippery_chain(num_envs=100, device="cpu", seed=7)
    assert torch.equal(a.reset(), b.reset())


def test_slippery_chain_is_small_and_always_right_is_optimal():
    chain = slippery_chain(device="cpu")
    assert (chain.n_states, chain.n_actions, chain.horizon) == (4, 2, 4)
    assert chain.n_states * (chain.n_actions * chain.n_states) ** chain.horizon <= 20_000
    policies = list(product((0, 1), repeat=4))
    values = dict(zip(policies, policy_values(chain, torch.nn.functional.one_hot(torch.tensor(policies), 2)).tolist()))
    best = max(values, key=values.get)
    assert best == (1, 1, 1, 1) and sorted(values.values())[-2] < values[best] - 0.3
    # and no stochastic policy on a grid beats it: the optimum over stationary policies is deterministic
    p_right = torch.cartesian_prod(*[torch.linspace(0, 1, 6, dtype=torch.float64)] * 4)
    assert policy_values(chain, torch.stack([1 - p_right, p_right], -1)).max() <= values[best] + 1e-9


def test_policy_values_is_the_sum_over_trajectories():
    "J(π) by pushing the state distribution forward equals Σ_τ P(τ) R(τ) over every trajectory (chapter 4)."
    chain = slippery_chain(device="cpu")
    probs = torch.softmax(torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64), -1)
    states, actions = torch.cartesian_prod(*[torch.arange(4)] * 5), torch.cartesian_prod(*[torch.arange(2)] * 4)
    s, a = states[:, None].expand(-1, len(actions), -1), actions[None].expand(len(states), -1, -1)
    P = chain.initial.double()[s[..., 0]] * chain.transition.double()[s[..., :-1], a, s[..., 1:]].prod(-1)
    R = chain.reward.double()[s[..., :-1], a, s[..., 1:]].sum(-1)
    for k in range(3):
        pi = probs[k][s[..., :-1], a].prod(-1)
        assert torch.isclose(policy_values(chain, probs[k:k + 1])[0], (P * pi * R).sum(), atol=1e-12)
    with pytest.raises(ValueError, match="probs must be a tensor"): policy_values(chain, probs[0])


# ---------------------------------------------------------------- CartPole

@pytest.mark.parametrize("num_envs, error", [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError)])
def test_cartpole_bad_num_envs(num_envs, error):
    with pytest.raises(error, match="num_envs"): CartPole(num_envs, device="cpu")


def test_cartpole_bad_state_mask_and_actions():
    env = CartPole(3, device="cpu")
    with pytest.raises(RuntimeError, match="reset"): env.step(torch.zeros(3, dtype=torch.long))
    env.reset()
    with pytest.raises(ValueError, match=r"expected \[3, 4\]"): env.state = torch.zeros(3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="floating-point"): env.state = torch.zeros(3, 4, dtype=torch.long)
    with pytest.raises(TypeError, match="floating-point"): env.state = [[0.0] * 4] * 3
    with pytest.raises(ValueError, match="finite"): env.state = torch.full((3, 4), math.nan)
    with pytest.raises(ValueError, match="mask"): env.reset(mask=torch.ones(3))
    with pytest.raises(ValueError, match="mask"): env.reset(mask=torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[0, 2\)"): env.step(torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer"): env.step(torch.tensor([0.0, 1.0, 1.0]))


def test_cartpole_dtypes_reset_range_and_state_roundtrip():
    env = CartPole(10_000, device="cpu", seed=0)
    obs = env.reset()
    assert obs.dtype == torch.float32 and env.state.dtype == torch.float64 and obs.shape == (10_000, 4)
    s = env.state
    assert s.abs().max() <= 0.05 and abs(s.mean()) < 0.002 and abs(s.std() - 0.1 / math.sqrt(12)) < 0.001
    env.state = torch.zeros(10_000, 4)  # float32 is accepted and stored as float64
    assert env.state.dtype == torch.float64 and not env.state.any()
    s = env.state; s[0, 0] = 1.0
    assert env.state[0, 0] == 0.0  # reading returns a copy


def test_cartpole_reward_termination_and_frozen_copies():
    env = CartPole(3, device="cpu")
    env.reset()
    env.state = torch.tensor([[0.0, 0.0, 0.2, 2.0], [2.39, 1.0, 0.0, 0.0], [0.0] * 4], dtype=torch.float64)
    obs, reward, terminated, truncated = env.step(torch.tensor([1, 1, 1]))
    assert terminated.tolist() == [True, True, False] and reward.tolist() == [1.0, 1.0, 1.0] and not truncated.any()
    frozen = env.state
    for _ in range(5):
        obs, reward, terminated, truncated = env.step(torch.tensor([0, 0, 0]))
        assert torch.equal(env.state[:2], frozen[:2]) and torch.equal(obs[:2], frozen[:2].float())
        assert reward.tolist() == [0.0, 0.0, 1.0] and not (terminated | truncated).any()
    assert env.t.tolist() == [1, 1, 6]


def test_cartpole_truncates_at_500_even_when_terminating():
    env = CartPole(2, device="cpu")
    env.reset()
    env.state = torch.zeros(2, 4, dtype=torch.float64)
    gains = torch.tensor([0.1, 0.5, 1.0, 0.5], dtype=torch.float64)
    for t in range(499):
        _, reward, terminated, truncated = env.step((env.state @ gains > 0).long())
        assert reward.tolist() == [1.0, 1.0] and not (terminated | truncated).any()
    env.state = torch.tensor([[0.0, 0.0, 0.2, 2.0], [0.0] * 4], dtype=torch.float64)  # copy 0 falls at step 500
    _, reward, terminated, truncated = env.step(torch.tensor([1, 1]))
    assert terminated.tolist() == [True, False] and truncated.tolist() == [True, True] and reward.tolist() == [1.0, 1.0]
    assert env.done.all() and env.max_steps == 500


def test_cartpole_reset_mask_restarts_only_the_masked_copies():
    env = CartPole(4, device="cpu", seed=0)
    env.reset()
    env.state = torch.tensor([[0.0, 0.0, 0.3, 0.0]] * 2 + [[0.0] * 4] * 2, dtype=torch.float64)
    env.step(torch.zeros(4, dtype=torch.long))  # copies 0 and 1 fall
    before, steps_before = env.state, env.t.clone()
    obs = env.reset(mask=torch.tensor([True, False, True, False]))
    assert env.done.tolist() == [False, True, False, False] and env.t.tolist() == [0, 1, 0, 1]
    assert torch.equal(env.state[[1, 3]], before[[1, 3]]) and (env.state[[0, 2]].abs() <= 0.05).all()
    assert torch.equal(obs, env.state.float()) and steps_before.tolist() == [1, 1, 1, 1]
    _, reward, _, _ = env.step(torch.zeros(4, dtype=torch.long))
    assert reward.tolist() == [1.0, 0.0, 1.0, 1.0]  # copy 1 stays frozen


def test_cartpole_reproducible_by_seed():
    def run(seed):
        env = CartPole(16, device="cpu", seed=seed)
        out = [env.reset()]
        for _ in range(10): out.append(env.step(torch.ones(16, dtype=torch.long))[0])
        return torch.stack(out)
    torch.manual_seed(0); a = run(5)
    torch.manual_seed(1); b = run(5)
    assert torch.equal(a, b) and not torch.equal(a, run(6))


def test_device_argument():
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    for env in [CartPole(2), slippery_chain(2)]:
        assert env.device == expected and env.reset().device == expected
    for env in [CartPole(2, device="cpu"), slippery_chain(2, device="cpu")]:
        assert env.device == torch.device("cpu")
    for make in [lambda: CartPole(2, device="tpu0"), lambda: slippery_chain(2, device="nope")]:
        with pytest.raises(ValueError, match="not a device"): make()


@cuda
def test_cuda_matches_cpu_and_rejects_cpu_actions():
    final = {}
    for device in ["cpu", "cuda"]:
        env = CartPole(64, device=device, seed=0)
        env.reset()
        env.state = torch.zeros(64, 4, dtype=torch.float64)
        for _ in range(30): obs = env.step(torch.ones(64, dtype=torch.long, device=env.device))[0]
        final[device] = obs.cpu()
    torch.testing.assert_close(final["cuda"], final["cpu"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="is on cpu"): env.step(torch.zeros(64, dtype=torch.long))
    traj = rollout(slippery_chain(256, device="cuda"), TabularPolicy(4, 2, device="cuda"))
    assert traj.obs.is_cuda and traj.mask.all()


# ---------------------------------------------------------------- rollout

def check_trajectory(traj, B):
    T = traj.mask.shape[1]
    assert traj.actions.shape == traj.rewards.shape == traj.log_probs.shape == (B, T)
    assert traj.actions.dtype == torch.long and traj.rewards.dtype == torch.float32 and traj.mask.dtype == torch.bool
    assert torch.equal(traj.mask, torch.arange(T) < traj.lengths[:, None])  # masks are prefixes
    assert (traj.rewards[~traj.mask] == 0).all() and traj.lengths.max() == T  # trimmed to the longest episode
    assert not traj.log_probs.requires_grad


def test_rollout_tabular():
    torch.manual_seed(0)
    policy = TabularPolicy(4, 2, device="cpu")
    traj = rollout(slippery_chain(100, device="cpu"), policy)
    check_trajectory(traj, 100)
    assert traj.obs.shape == (100, 4) and traj.mask.all()
    assert torch.allclose(policy(traj.obs).log_prob(traj.actions), traj.log_probs)


def test_rollout_cartpole_returns_are_lengths():
    torch.manual_seed(0)
    policy = MLPPolicy(4, 2, device="cpu")
    env = CartPole(300, device="cpu")
    traj = rollout(env, policy)
    check_trajectory(traj, 300)
    assert traj.obs.shape == (300, traj.mask.shape[1], 4) and traj.obs.dtype == torch.float32
    assert torch.equal(traj.rewards.sum(1), traj.lengths.float()) and env.done.all()
    assert traj.lengths.min() < traj.lengths.max()
    assert torch.allclose(policy(traj.obs).log_prob(traj.actions), traj.log_probs, atol=1e-6)


def test_rollout_stops_at_max_steps():
    env = CartPole(8, device="cpu")
    traj = rollout(env, uniform(2), max_steps=5)
    check_trajectory(traj, 8)
    assert traj.mask.shape[1] == 5 and traj.mask.all() and not env.done.any()


def test_rollout_tokens():
    torch.manual_seed(0)
    task = TokenTask(num_envs=32, answer_len=3, device="cpu", seed=0)
    policy = TransformerPolicy(task.vocab_size, task.prompt_len + task.answer_len, device="cpu")
    traj = rollout(task, policy)
    check_trajectory(traj, 32)
    assert traj.obs.shape == (32, 3, task.obs_len) and traj.mask.all() and (traj.rewards[:, :-1] == 0).all()
    assert torch.allclose(policy(traj.obs).log_prob(traj.actions), traj.log_probs, atol=1e-5)


class Countdown:
    "Copy i terminates after lengths[i] steps; no checks, no reads from the device."
    n_actions = 2

    def __init__(self, lengths):
        self.lengths, self.num_envs, self.max_steps, self.device = lengths, len(lengths), 1000, lengths.device

    def reset(self):
        self.t = torch.zeros_like(self.lengths)
        return self.t.float()[:, None]

    def step(self, action):
        running = self.t < self.lengths
        self.t = self.t + running
        return self.t.float()[:, None], running.float(), running & (self.t == self.lengths), torch.zeros_like(running)


def test_rollout_reads_the_device_once_every_32_steps(monkeypatch):
    reads = []
    for name in ["__bool__", "__int__", "__float__", "item", "tolist", "cpu", "numpy"]:
        original = getattr(torch.Tensor, name)
        def spy(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    policy = lambda obs: Categorical(logits=torch.zeros(obs.shape[0], 2), validate_args=False)
    traj = rollout(Countdown(torch.tensor([10, 70, 40])), policy)
    monkeypatch.undo()
    assert traj.mask.shape[1] == 70 and traj.lengths.tolist() == [10, 70, 40]
    assert reads == ["__bool__"] * 3 + ["__int__"]  # done.all() after steps 32, 64, 96; then trimming


@pytest.mark.parametrize("max_steps, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError),
                                               (True, TypeError), ("10", TypeError)])
def test_rollout_bad_max_steps(max_steps, error):
    with pytest.raises(error, match="max_steps"): rollout(CartPole(2, device="cpu"), uniform(2), max_steps=max_steps)


def test_rollout_bad_env_and_policy():
    with pytest.raises(TypeError, match="environment interface"): rollout(object(), uniform(2))
    with pytest.raises(TypeError, match="callable"): rollout(CartPole(2, device="cpu"), "policy")
    with pytest.raises(ValueError, match=r"actions of shape \[3\]"): rollout(CartPole(2, device="cpu"), lambda o: uniform(2)(torch.zeros(3)))


def test_trajectory_checks_its_shapes():
    B, T = 2, 3
    ok = dict(obs=torch.zeros(B, T, 4), actions=torch.zeros(B, T, dtype=torch.long), rewards=torch.zeros(B, T),
              log_probs=torch.zeros(B, T), mask=torch.ones(B, T, dtype=torch.bool))
    Trajectory(**ok)
    for field, bad, error in [("rewards", torch.zeros(B, T + 1), ValueError), ("obs", torch.zeros(B, T + 1, 4), ValueError),
                              ("mask", torch.ones(B, T), ValueError), ("actions", torch.zeros(B, T), TypeError),
                              ("rewards", torch.zeros(B, T, dtype=torch.float64), TypeError)]:
        with pytest.raises(error): Trajectory(**{**ok, field: bad})
