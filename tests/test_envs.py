"""Chapter 3: the Env interface, the tabular MDP, CartPole, Trajectory and rollout."""

import math
from itertools import product

import pytest
import torch
from torch.distributions import Categorical

import plainrl.checks
import plainrl.trajectory
from plainrl.envs.cartpole import CartPole
from plainrl.envs.tabular import (
    TabularMDP,
    optimal_value,
    policy_values,
    slippery_chain,
)
from plainrl.envs.tokens import TokenTask
from plainrl.policy import MLPPolicy, TabularPolicy, TransformerPolicy
from plainrl.trajectory import ENV_MEMBERS, Env, Trajectory, rollout

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
META = torch.device("meta")


def random_mdp(S=3, A=2, horizon=5, num_envs=1, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    initial = torch.rand(S, generator=g)
    transition = torch.rand(S, A, S, generator=g)
    return TabularMDP(
        initial / initial.sum(),
        transition / transition.sum(-1, keepdim=True),
        torch.randn(S, A, S, generator=g),
        horizon,
        num_envs=num_envs,
        device=device,
        seed=seed,
    )


def uniform(n_actions):
    "A policy that ignores the state: uniform over `n_actions`, on any batch of states."
    return lambda obs: Categorical(
        logits=torch.zeros(obs.shape[0], n_actions, device=obs.device)
    )


# ---------------------------------------------------------------- the interface


@pytest.mark.parametrize(
    "make",
    [
        lambda: slippery_chain(3, device="cpu"),
        lambda: CartPole(3, device="cpu"),
        lambda: TokenTask(4, device="cpu", group_size=2),
    ],
)
def test_every_env_has_the_interface(make):
    env = make()
    assert set(Env.__annotations__) <= set(ENV_MEMBERS)
    assert all(hasattr(env, name) for name in ENV_MEMBERS)
    assert isinstance(env.generator, torch.Generator)
    assert env.group_size == (2 if isinstance(env, TokenTask) else 1)
    assert env.device == torch.device("cpu") and isinstance(env.max_steps, int)


# ---------------------------------------------------------------- tabular MDP

P2 = torch.full((2, 2, 2), 0.5)
R2 = torch.zeros(2, 2, 2)


@pytest.mark.parametrize(
    "args, error, message",
    [
        (([0.5, 0.6], P2, R2, 3), ValueError, "initial must sum to 1"),
        (([1.5, -0.5], P2, R2, 3), ValueError, "initial has negative"),
        (
            ([1.0, 0.0], torch.full((2, 2, 2), 0.6), R2, 3),
            ValueError,
            "transition must",
        ),
        (
            ([1.0, 0.0], P2.clone().fill_(math.nan), R2, 3),
            ValueError,
            "transition has NaN",
        ),
        (([1.0, 0.0], torch.full((2, 2, 3), 1 / 3), R2, 3), ValueError, r"\[2, 2, 3\]"),
        (([1.0, 0.0], torch.full((3, 2, 2), 0.5), R2, 3), ValueError, r"\[2, any, 2\]"),
        (([1.0, 0.0], P2, torch.zeros(2, 2), 3), ValueError, "reward has shape"),
        (([1.0, 0.0], P2, torch.zeros(2, 3, 2), 3), ValueError, "reward has shape"),
        (
            ([1.0, 0.0], P2, torch.full((2, 2, 2), math.inf), 3),
            ValueError,
            "reward has NaN",
        ),
        (([[1.0, 0.0]], P2, R2, 3), ValueError, "initial has shape"),
        (("abc", P2, R2, 3), TypeError, "initial must be a torch.Tensor"),
        ((["a", "b"], P2, R2, 3), TypeError, "initial must be a float tensor"),
        ((torch.tensor([1, 0]), P2, R2, 3), TypeError, "initial must have a floating"),
        (
            (torch.tensor([True, False]), P2, R2, 3),
            TypeError,
            "initial must have a float",
        ),
        (
            ([1.0, 0.0], P2.to(torch.complex64), R2, 3),
            TypeError,
            "transition must have",
        ),
        (([1.0, 0.0], P2.to(torch.uint8), R2, 3), TypeError, "transition must have"),
        (([1.0, 0.0], P2, R2.to(META), 3), ValueError, "reward is a meta tensor"),
        (
            (torch.zeros(0), torch.zeros(0, 1, 0), torch.zeros(0, 1, 0), 3),
            ValueError,
            "at least one state",
        ),  # fmt: skip
        (([1.0, 0.0], P2, R2, 0), ValueError, "horizon must be an int >= 1"),
        (([1.0, 0.0], P2, R2, 2.5), TypeError, "horizon must be an int"),
        (([1.0, 0.0], P2, R2, True), TypeError, "horizon must be an int"),
    ],
)
def test_tabular_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        TabularMDP(*args, device="cpu")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_envs=0), ValueError, "num_envs"),
        (dict(num_envs=2.0), TypeError, "num_envs"),
        (dict(seed="0"), TypeError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(device="gpu"), ValueError, "not a device"),
        (dict(device=3), TypeError, "device"),
    ],
)
def test_tabular_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        TabularMDP([1.0, 0.0], P2, R2, 3, **{"device": "cpu", **kwargs})


@pytest.mark.parametrize(
    "action, error, message",
    [
        (torch.zeros(3, dtype=torch.long), ValueError, r"expected \[4\]"),
        (torch.zeros(4), TypeError, "integer"),
        (torch.zeros(4, dtype=torch.bool), TypeError, "integer"),
        (torch.zeros(4, dtype=torch.uint8), TypeError, "integer"),
        (torch.zeros(4, dtype=torch.complex64), TypeError, "integer"),
        ([0, 0, 0, 0], TypeError, "torch.Tensor"),
        (torch.full((4,), 2), ValueError, r"\[0, 2\)"),
        (torch.full((4,), -1), ValueError, r"\[0, 2\)"),
        (torch.zeros(4, dtype=torch.long, device=META), ValueError, "meta"),
    ],
)
def test_tabular_bad_actions(action, error, message):
    mdp = random_mdp(num_envs=4)
    with pytest.raises(RuntimeError, match="reset"):
        mdp.step(torch.zeros(4, dtype=torch.long))
    mdp.reset()
    with pytest.raises(error, match=message):
        mdp.step(action)


def test_tabular_sampling_matches_the_tables():
    N = 40_000
    mdp = random_mdp(S=4, A=2, num_envs=N, seed=1)
    s0 = mdp.reset()
    action = torch.randint(2, (N,), generator=torch.Generator().manual_seed(0))
    s1, reward, terminated, truncated = mdp.step(action)
    for sampled, probs in [
        (s0, mdp.initial),
        (s1[(s0 == 2) & (action == 1)], mdp.transition[2, 1]),
    ]:
        freq = torch.bincount(sampled, minlength=4) / len(sampled)
        sigma = (probs * (1 - probs) / len(sampled)).sqrt()
        assert ((freq - probs).abs() <= 4 * sigma + 1e-9).all()
    assert torch.equal(
        reward, mdp.reward[s0, action, s1]
    )  # eq. 2: r_t = R(s_t, a_t, s_t+1)
    assert reward.dtype == torch.float32 and s1.dtype == torch.long


def test_tabular_never_samples_a_state_of_probability_zero():
    initial = torch.tensor([0.0, 0.5, 0.0, 0.5, 0.0])
    transition = torch.zeros(5, 1, 5)
    transition[:, 0, 1], transition[:, 0, 3] = 0.3, 0.7
    R = torch.zeros(5, 1, 5)
    mdp = TabularMDP(initial, transition, R, horizon=3, num_envs=50_000, device="cpu")
    action = torch.zeros(50_000, dtype=torch.long)
    states = [mdp.reset()] + [mdp.step(action)[0] for _ in range(3)]
    assert all(((s == 1) | (s == 3)).all() for s in states)


def test_tabular_horizon_truncates_then_freezes():
    mdp = random_mdp(horizon=3, num_envs=5)
    mdp.reset()
    action = torch.ones(5, dtype=torch.long)
    for t in range(1, 4):
        _, _, terminated, truncated = mdp.step(action)
        assert not terminated.any() and truncated.all() == (t == 3)
        assert truncated.any() == (t == 3)
    final = mdp.state
    for _ in range(2):
        s, reward, terminated, truncated = mdp.step(action)
        assert torch.equal(s, final) and not reward.any()
        assert not (terminated | truncated).any()
    assert mdp.max_steps == mdp.horizon == 3


def test_tabular_reproducible_by_seed_and_independent_of_global_rng():
    def run(seed, global_seed):
        torch.manual_seed(global_seed)
        mdp = random_mdp(num_envs=64, seed=0)
        mdp.generator.manual_seed(seed)
        states = [mdp.reset()]
        for _ in range(5):
            states.append(mdp.step(torch.ones(64, dtype=torch.long))[0])
        return torch.stack(states)

    assert torch.equal(run(3, 0), run(3, 1))
    assert not torch.equal(run(3, 0), run(4, 0))
    a = slippery_chain(num_envs=100, device="cpu", seed=7)
    b = slippery_chain(num_envs=100, device="cpu", seed=7)
    assert torch.equal(a.reset(), b.reset())


def one_hot_policies(S, A):
    choices = torch.tensor(list(product(range(A), repeat=S)))
    return torch.nn.functional.one_hot(choices, A).double()


def test_slippery_chain_is_small_and_always_right_is_optimal():
    chain = slippery_chain(device="cpu")
    assert (chain.n_states, chain.n_actions, chain.horizon) == (4, 2, 4)
    assert (
        chain.n_states * (chain.n_actions * chain.n_states) ** chain.horizon <= 20_000
    )
    policies = list(product((0, 1), repeat=4))
    probs = torch.nn.functional.one_hot(torch.tensor(policies), 2).float()
    values = dict(zip(policies, policy_values(chain, probs).tolist()))
    best = max(values, key=values.get)
    assert best == (1, 1, 1, 1) and sorted(values.values())[-2] < values[best] - 0.3
    # no stochastic policy on a grid beats it: the optimum is deterministic
    p_right = torch.cartesian_prod(*[torch.linspace(0, 1, 6, dtype=torch.float64)] * 4)
    grid = torch.stack([1 - p_right, p_right], -1)
    assert policy_values(chain, grid).max() <= values[best] + 1e-9
    assert math.isclose(optimal_value(chain).item(), values[best], rel_tol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("gamma", [1.0, 0.7, 0.0])
def test_optimal_value_is_the_best_deterministic_policy(seed, gamma):
    mdp = random_mdp(S=3, A=3, horizon=4, seed=seed)
    J = policy_values(mdp, one_hot_policies(3, 3), gamma)
    best = optimal_value(mdp, gamma)
    assert best.dim() == 0 and torch.isclose(best, J.max(), rtol=0, atol=1e-12)
    assert (J <= best + 1e-12).all()
    if gamma == 0.0:  # γ = 0: only the first reward counts
        p0, P, R = mdp.initial.double(), mdp.transition.double(), mdp.reward.double()
        first = (P * R).sum(-1).max(-1).values  # best expected first reward per state
        assert torch.isclose(best, (p0 * first).sum(), atol=1e-9)


def test_policy_values_is_the_sum_over_trajectories():
    "J(π) by pushing the state distribution forward equals Σ_τ P(τ) R(τ)."
    chain = slippery_chain(device="cpu")
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 4, 2, generator=g, dtype=torch.float64), -1)
    states = torch.cartesian_prod(*[torch.arange(4)] * 5)
    actions = torch.cartesian_prod(*[torch.arange(2)] * 4)
    s = states[:, None].expand(-1, len(actions), -1)
    a = actions[None].expand(len(states), -1, -1)
    P = chain.transition.double()[s[..., :-1], a, s[..., 1:]].prod(-1)
    P = chain.initial.double()[s[..., 0]] * P
    R = chain.reward.double()[s[..., :-1], a, s[..., 1:]].sum(-1)
    for k in range(3):
        pi = probs[k][s[..., :-1], a].prod(-1)
        J = policy_values(chain, probs[k : k + 1])[0]
        assert torch.isclose(J, (P * pi * R).sum(), atol=1e-12)


CHAIN = slippery_chain(device="cpu")
HALF = torch.full((1, 4, 2), 0.5)


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        (("chain", HALF), {}, TypeError, "mdp must be a TabularMDP"),
        ((CHAIN, HALF.tolist()), {}, TypeError, "probs must be a torch.Tensor"),
        ((CHAIN, HALF.long()), {}, TypeError, "probs must have a floating"),
        ((CHAIN, HALF.bool()), {}, TypeError, "probs must have a floating"),
        ((CHAIN, HALF.to(torch.uint8)), {}, TypeError, "probs must have a floating"),
        ((CHAIN, HALF.to(torch.complex64)), {}, TypeError, "probs must have a float"),
        ((CHAIN, HALF[0]), {}, ValueError, r"probs has shape \[4, 2\]"),
        ((CHAIN, torch.full((1, 4, 3), 1 / 3)), {}, ValueError, "probs has shape"),
        ((CHAIN, HALF[:0]), {}, ValueError, "probs is empty"),
        ((CHAIN, HALF.to(META)), {}, ValueError, "probs is a meta tensor"),
        ((CHAIN, HALF * math.nan), {}, ValueError, "probs has NaN"),
        ((CHAIN, HALF * math.inf), {}, ValueError, "probs has NaN"),
        ((CHAIN, HALF * 1.2), {}, ValueError, "probs must sum to 1"),
        (
            (CHAIN, HALF * torch.tensor([-1.0, 3.0])),
            {},
            ValueError,
            "probs has negative",
        ),
        ((CHAIN, HALF), dict(gamma=1.5), ValueError, "gamma"),
        ((CHAIN, HALF), dict(gamma=-0.1), ValueError, "gamma"),
        ((CHAIN, HALF), dict(gamma=math.nan), ValueError, "gamma"),
        ((CHAIN, HALF), dict(gamma="1"), TypeError, "gamma"),
        ((CHAIN, HALF), dict(gamma=True), TypeError, "gamma"),
    ],
)
def test_policy_values_bad_input(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        policy_values(*args, **kwargs)


@pytest.mark.parametrize(
    "args, error, message",
    [
        (("chain",), TypeError, "mdp must be a TabularMDP"),
        ((CHAIN, 2.0), ValueError, "gamma"),
        ((CHAIN, None), TypeError, "gamma"),
        ((random_mdp(S=17, A=2),), ValueError, "too many"),
    ],
)
def test_optimal_value_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        optimal_value(*args)


# ---------------------------------------------------------------- CartPole


@pytest.mark.parametrize(
    "num_envs, error",
    [(0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError)],
)
def test_cartpole_bad_num_envs(num_envs, error):
    with pytest.raises(error, match="num_envs"):
        CartPole(num_envs, device="cpu")


@pytest.mark.parametrize(
    "seed, error", [(1.5, TypeError), (-1, ValueError), ("0", TypeError)]
)
def test_cartpole_bad_seed(seed, error):
    with pytest.raises(error, match="seed"):
        CartPole(2, device="cpu", seed=seed)


def test_cartpole_bad_state_mask_and_actions():
    env = CartPole(3, device="cpu")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(torch.zeros(3, dtype=torch.long))
    env.reset()
    bad_states = [
        (torch.zeros(3, 3, dtype=torch.float64), ValueError, r"expected \[3, 4\]"),
        (torch.zeros(3, 4, dtype=torch.long), TypeError, "floating-point"),
        (torch.zeros(3, 4, dtype=torch.bool), TypeError, "floating-point"),
        (torch.zeros(3, 4, dtype=torch.complex64), TypeError, "floating-point"),
        ([[0.0] * 4] * 3, TypeError, "torch.Tensor"),
        (torch.full((3, 4), math.nan), ValueError, "finite"),
        (torch.full((3, 4), math.inf), ValueError, "finite"),
        (torch.zeros(3, 4, device=META), ValueError, "meta"),
    ]
    for state, error, message in bad_states:
        with pytest.raises(error, match=message):
            env.state = state
    bad_masks = [
        (torch.ones(3), TypeError, "mask must have dtype torch.bool"),
        (torch.ones(3, dtype=torch.uint8), TypeError, "mask"),
        (torch.ones(2, dtype=torch.bool), ValueError, r"mask has shape \[2\]"),
        (torch.ones(3, dtype=torch.bool, device=META), ValueError, "mask is a meta"),
        ([True] * 3, TypeError, "mask must be a torch.Tensor"),
    ]
    for mask, error, message in bad_masks:
        with pytest.raises(error, match=message):
            env.reset(mask=mask)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        env.step(torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer"):
        env.step(torch.tensor([0.0, 1.0, 1.0]))


def test_cartpole_dtypes_reset_range_and_state_roundtrip():
    env = CartPole(10_000, device="cpu", seed=0)
    obs = env.reset()
    assert obs.dtype == torch.float32 and env.state.dtype == torch.float64
    assert obs.shape == (10_000, 4)
    s = env.state
    assert s.abs().max() <= 0.05 and abs(s.mean()) < 0.002
    assert abs(s.std() - 0.1 / math.sqrt(12)) < 0.001
    env.state = torch.zeros(10_000, 4)  # float32 is accepted and stored as float64
    assert env.state.dtype == torch.float64 and not env.state.any()
    s = env.state
    s[0, 0] = 1.0
    assert env.state[0, 0] == 0.0  # reading returns a copy


def test_cartpole_reward_termination_and_frozen_copies():
    env = CartPole(3, device="cpu")
    env.reset()
    s = [[0.0, 0.0, 0.2, 2.0], [2.39, 1.0, 0.0, 0.0], [0.0] * 4]
    env.state = torch.tensor(s, dtype=torch.float64)
    obs, reward, terminated, truncated = env.step(torch.tensor([1, 1, 1]))
    assert terminated.tolist() == [True, True, False] and not truncated.any()
    assert reward.tolist() == [1.0, 1.0, 1.0]
    frozen = env.state
    for _ in range(5):
        obs, reward, terminated, truncated = env.step(torch.tensor([0, 0, 0]))
        assert torch.equal(env.state[:2], frozen[:2])
        assert torch.equal(obs[:2], frozen[:2].float())
        assert reward.tolist() == [0.0, 0.0, 1.0] and not (terminated | truncated).any()
    assert env.t.tolist() == [1, 1, 6]


def balance(env, steps):
    gains = torch.tensor([0.1, 0.5, 1.0, 0.5], dtype=torch.float64)
    for _ in range(steps):
        out = env.step((env.state @ gains > 0).long())
    return out


def test_cartpole_truncates_at_500_even_when_terminating():
    env = CartPole(2, device="cpu")
    env.reset()
    env.state = torch.zeros(2, 4, dtype=torch.float64)
    _, reward, terminated, truncated = balance(env, 499)
    assert reward.tolist() == [1.0, 1.0] and not (terminated | truncated).any()
    s = [[0.0, 0.0, 0.2, 2.0], [0.0] * 4]  # copy 0 falls at step 500
    env.state = torch.tensor(s, dtype=torch.float64)
    _, reward, terminated, truncated = env.step(torch.tensor([1, 1]))
    assert terminated.tolist() == [True, False] and truncated.tolist() == [True, True]
    assert reward.tolist() == [1.0, 1.0] and env.done.all() and env.max_steps == 500


def test_cartpole_reset_mask_restarts_only_the_masked_copies():
    env = CartPole(4, device="cpu", seed=0)
    env.reset()
    s = [[0.0, 0.0, 0.3, 0.0]] * 2 + [[0.0] * 4] * 2
    env.state = torch.tensor(s, dtype=torch.float64)
    env.step(torch.zeros(4, dtype=torch.long))  # copies 0 and 1 fall
    before, steps_before = env.state, env.t.clone()
    obs = env.reset(mask=torch.tensor([True, False, True, False]))
    assert env.done.tolist() == [False, True, False, False]
    assert env.t.tolist() == [0, 1, 0, 1]
    assert torch.equal(env.state[[1, 3]], before[[1, 3]])
    assert (env.state[[0, 2]].abs() <= 0.05).all()
    assert torch.equal(obs, env.state.float()) and steps_before.tolist() == [1, 1, 1, 1]
    _, reward, _, _ = env.step(torch.zeros(4, dtype=torch.long))
    assert reward.tolist() == [1.0, 0.0, 1.0, 1.0]  # copy 1 stays frozen


def test_cartpole_reproducible_by_seed():
    def run(seed):
        env = CartPole(16, device="cpu", seed=seed)
        out = [env.reset()]
        for _ in range(10):
            out.append(env.step(torch.ones(16, dtype=torch.long))[0])
        return torch.stack(out)

    torch.manual_seed(0)
    a = run(5)
    torch.manual_seed(1)
    b = run(5)
    assert torch.equal(a, b) and not torch.equal(a, run(6))


def test_device_argument():
    expected = (
        torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    )
    for env in [CartPole(2), slippery_chain(2), TokenTask(2)]:
        assert env.device == expected and env.reset().device == expected
    for env in [CartPole(2, device="cpu"), slippery_chain(2, device="cpu")]:
        assert env.device == torch.device("cpu")
    for make in [
        lambda: CartPole(2, device="tpu0"),
        lambda: slippery_chain(2, device="x"),
    ]:
        with pytest.raises(ValueError, match="not a device"):
            make()


@cuda
def test_cuda_matches_cpu_and_rejects_cpu_actions():
    final = {}
    for device in ["cpu", "cuda"]:
        env = CartPole(64, device=device, seed=0)
        env.reset()
        env.state = torch.zeros(64, 4, dtype=torch.float64)
        for _ in range(30):
            obs = env.step(torch.ones(64, dtype=torch.long, device=env.device))[0]
        final[device] = obs.cpu()
    torch.testing.assert_close(final["cuda"], final["cpu"], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="is on cpu"):
        env.step(torch.zeros(64, dtype=torch.long))
    traj = rollout(
        slippery_chain(256, device="cuda"), TabularPolicy(4, 2, device="cuda")
    )
    assert traj.obs.is_cuda and traj.mask.all() and traj.truncated[:, -1].all()
    ok = {f: getattr(traj, f) for f in FIELDS}
    with pytest.raises(ValueError, match="rewards is on cpu"):
        Trajectory(**ok | {"rewards": traj.rewards.cpu()})
    with pytest.raises(ValueError, match="probs is on cpu"):
        policy_values(slippery_chain(device="cuda"), HALF)


# ---------------------------------------------------------------- rollout


def check_trajectory(traj, B):
    T = traj.mask.shape[1]
    assert traj.actions.shape == traj.rewards.shape == traj.log_probs.shape == (B, T)
    assert traj.terminated.shape == traj.truncated.shape == (B, T)
    assert traj.actions.dtype == torch.long and traj.rewards.dtype == torch.float32
    assert (
        traj.mask.dtype == traj.terminated.dtype == traj.truncated.dtype == torch.bool
    )
    assert torch.equal(traj.mask, torch.arange(T) < traj.lengths[:, None])  # prefixes
    assert (traj.rewards[~traj.mask] == 0).all()
    assert traj.lengths.max() == T  # trimmed to the longest episode
    last = torch.nn.functional.one_hot(
        traj.lengths - 1, T
    ).bool()  # each row's last step
    assert torch.equal(traj.terminated | traj.truncated, last)
    assert not (traj.terminated & traj.truncated).any()
    assert not traj.log_probs.requires_grad
    assert traj.ref_log_probs is None and traj.values is None


def test_rollout_tabular():
    torch.manual_seed(0)
    policy = TabularPolicy(4, 2, device="cpu")
    traj = rollout(slippery_chain(100, device="cpu"), policy)
    check_trajectory(traj, 100)
    assert traj.obs.shape == (100, 4) and traj.mask.all() and traj.group_size == 1
    assert traj.truncated[:, -1].all() and not traj.terminated.any()
    assert torch.allclose(policy(traj.obs).log_prob(traj.actions), traj.log_probs)


def test_rollout_cartpole_returns_are_lengths():
    torch.manual_seed(0)
    policy = MLPPolicy(4, 2, device="cpu")
    env = CartPole(300, device="cpu")
    traj = rollout(env, policy)
    check_trajectory(traj, 300)
    assert traj.obs.shape == (300, traj.mask.shape[1], 4)
    assert traj.obs.dtype == torch.float32
    assert torch.equal(traj.rewards.sum(1), traj.lengths.float()) and env.done.all()
    assert traj.lengths.min() < traj.lengths.max()
    assert traj.terminated.any(1).all() and not traj.truncated.any()  # every pole fell
    recomputed = policy(traj.obs).log_prob(traj.actions)
    assert torch.allclose(recomputed, traj.log_probs, atol=1e-6)


def controller(obs):
    gains = torch.tensor([0.1, 0.5, 1.0, 0.5])
    return Categorical(
        probs=torch.nn.functional.one_hot((obs @ gains > 0).long(), 2).float()
    )


def test_rollout_cartpole_time_limit_is_truncated_not_terminated():
    traj = rollout(CartPole(16, device="cpu", seed=0), controller)
    check_trajectory(traj, 16)
    assert (traj.lengths == 500).all() and traj.truncated[:, 499].all()
    assert not traj.terminated.any()


def test_rollout_stops_at_max_steps_and_marks_the_rows_truncated():
    env = CartPole(8, device="cpu")
    traj = rollout(env, uniform(2), max_steps=5)
    check_trajectory(traj, 8)
    assert traj.mask.shape[1] == 5 and traj.mask.all() and not env.done.any()
    assert traj.truncated[:, 4].all() and not traj.terminated.any()


def test_rollout_tokens():
    torch.manual_seed(0)
    task = TokenTask(num_envs=32, answer_len=3, device="cpu", seed=0, group_size=4)
    policy = TransformerPolicy(
        task.vocab_size, task.prompt_len + task.answer_len, device="cpu"
    )
    traj = rollout(task, policy)
    check_trajectory(traj, 32)
    assert traj.obs.shape == (32, 3, task.obs_len) and traj.mask.all()
    assert (traj.rewards[:, :-1] == 0).all() and traj.group_size == 4
    assert traj.terminated[:, -1].all() and not traj.truncated.any()
    recomputed = policy(traj.obs).log_prob(traj.actions)
    assert torch.allclose(recomputed, traj.log_probs, atol=1e-5)


def test_rollout_tokens_stop_masks_the_steps_after_eos():
    task = TokenTask(num_envs=400, answer_len=4, device="cpu", seed=0, stop=True)
    torch.manual_seed(0)
    traj = rollout(task, uniform(task.n_actions))  # EOS with probability 1/12 per token
    check_trajectory(traj, 400)
    eos = traj.actions == task.eos_id
    first = torch.where(eos.any(1), eos.int().argmax(1) + 1, 4)  # length: up to the EOS
    assert torch.equal(traj.lengths, first) and traj.lengths.min() == 1
    assert torch.equal(traj.terminated.any(1), eos.any(1))
    assert (traj.rewards.sum(1)[traj.truncated.any(1)] == 0).all()
    answers = torch.where(traj.mask, traj.actions, task.eos_id)
    expected = task.score(answers)  # truncated rows: no EOS, 0
    assert torch.equal(traj.rewards.sum(1), expected) and expected.sum() > 0


class Countdown:
    "Copy i terminates after lengths[i] steps; no checks, no reads from the device."

    n_actions, group_size = 2, 1

    def __init__(self, lengths, both_at=None):
        self.lengths, self.num_envs = lengths, len(lengths)
        self.max_steps, self.device = 1000, lengths.device
        self.generator = torch.Generator()
        self.both_at = both_at  # report terminated and truncated at once

    def reset(self):
        self.t = torch.zeros_like(self.lengths)
        return self.t.float()[:, None]

    def step(self, action):
        running = self.t < self.lengths
        self.t = self.t + running
        end = running & (self.t == self.lengths)
        both = end if self.both_at is not None else torch.zeros_like(running)
        return self.t.float()[:, None], running.float(), end, both


def test_rollout_reads_the_device_once_every_32_steps(monkeypatch):
    reads = []
    for name in ["__bool__", "__int__", "__float__", "item", "tolist", "cpu", "numpy"]:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    # the value checks of Trajectory run without a sync off the CPU
    monkeypatch.setattr(plainrl.trajectory, "check", lambda ok, message: None)
    monkeypatch.setattr(plainrl.checks, "check", lambda ok, message: None)

    def policy(obs):
        return Categorical(logits=torch.zeros(obs.shape[0], 2), validate_args=False)

    traj = rollout(Countdown(torch.tensor([10, 70, 40])), policy)
    monkeypatch.undo()
    assert traj.mask.shape[1] == 70 and traj.lengths.tolist() == [10, 70, 40]
    assert reads == ["__bool__"] * 3 + ["__int__"]  # done.all() after 32, 64, 96; trim


def test_rollout_terminated_wins_when_the_env_reports_both():
    policy = uniform(2)
    traj = rollout(Countdown(torch.tensor([3, 5]), both_at=True), policy)
    check_trajectory(traj, 2)
    assert traj.terminated[0, 2] and traj.terminated[1, 4] and not traj.truncated.any()


@pytest.mark.parametrize(
    "max_steps, error",
    [
        (0, ValueError),
        (-1, ValueError),
        (2.5, TypeError),
        (True, TypeError),
        ("10", TypeError),
    ],
)
def test_rollout_bad_max_steps(max_steps, error):
    with pytest.raises(error, match="max_steps"):
        rollout(CartPole(2, device="cpu"), uniform(2), max_steps=max_steps)


@pytest.mark.parametrize("member", ENV_MEMBERS)
def test_rollout_names_the_missing_env_member(member):
    class Partial(Countdown):
        pass

    env = Partial(torch.tensor([2, 3]))
    setattr(
        Partial, member, property(lambda self: (_ for _ in ()).throw(AttributeError))
    )
    with pytest.raises(TypeError, match=rf"lacks \.{member}"):
        rollout(env, uniform(2))


def test_rollout_bad_env_and_policy():
    with pytest.raises(TypeError, match="Env interface"):
        rollout(object(), uniform(2))
    with pytest.raises(TypeError, match="callable"):
        rollout(CartPole(2, device="cpu"), "policy")
    with pytest.raises(ValueError, match=r"actions \[3\]"):
        rollout(CartPole(2, device="cpu"), lambda o: uniform(2)(torch.zeros(3)))


# ---------------------------------------------------------------- Trajectory

B, T = 4, 3
FIELDS = ("obs", "actions", "log_probs", "rewards", "terminated", "truncated", "mask")


def good_fields():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    terminated = torch.zeros(B, T, dtype=torch.bool)
    truncated = torch.zeros(B, T, dtype=torch.bool)
    terminated[0, 2] = terminated[1, 1] = True
    truncated[2, 0] = truncated[3, 2] = True
    return dict(
        obs=torch.zeros(B, T, 4),
        actions=torch.ones(B, T, dtype=torch.long),
        log_probs=torch.full((B, T), -0.5),
        rewards=torch.ones(B, T) * mask,
        terminated=terminated,
        truncated=truncated,
        mask=mask,
    )


def test_trajectory_accepts_good_fields_and_keeps_its_slots():
    ok = good_fields()
    traj = Trajectory(**ok)
    assert traj.group_size == 1 and traj.ref_log_probs is None and traj.values is None
    assert traj.lengths.tolist() == [3, 2, 1, 3]
    full = Trajectory(
        *ok.values(), 2, torch.zeros(B, T), torch.zeros(B, T)
    )  # by position
    assert full.group_size == 2 and full.values.shape == (B, T)
    assert [f for f in Trajectory.__dataclass_fields__] == [
        *FIELDS, "group_size", "ref_log_probs", "values"
    ]  # fmt: skip
    padding_nan = ok["rewards"].masked_fill(~ok["mask"], math.nan)  # padding is free
    Trajectory(
        **ok | {"rewards": padding_nan, "obs": torch.zeros(B, T, dtype=torch.long)}
    )
    Trajectory(**ok | {"obs": torch.zeros(B, T, 2, 2)})


def with_(field, change):
    "The good fields with `field` changed by `change(value)`."
    ok = good_fields()
    return ok | {field: change(ok[field])}


def flag_twice(x):
    x = x.clone()
    x[0, 1] = True
    return x


def gap(mask):
    mask = mask.clone()
    mask[0, 1] = False
    return mask


@pytest.mark.parametrize(
    "fields, error, message",
    [
        (with_("obs", lambda x: x.tolist()), TypeError, "obs must be a torch.Tensor"),
        (with_("obs", lambda x: x[:, :2]), ValueError, "obs has shape"),
        (with_("obs", lambda x: x[:, :, 0, None][:, :, 0]), None, None),  # [B, T]: fine
        (with_("obs", lambda x: x[0]), ValueError, "obs has shape"),
        (with_("obs", lambda x: x.bool()), TypeError, "obs must have"),
        (with_("obs", lambda x: x.to(torch.uint8)), TypeError, "obs must have"),
        (with_("obs", lambda x: x.to(torch.complex64)), TypeError, "obs must have"),
        (with_("obs", lambda x: x.to(META)), ValueError, "obs is a meta tensor"),
        (
            with_("actions", lambda x: x.float()),
            TypeError,
            "actions must have an integer",
        ),
        (with_("actions", lambda x: x.int()), TypeError, "actions must be int64"),
        (
            with_("actions", lambda x: x.bool()),
            TypeError,
            "actions must have an integer",
        ),
        (with_("actions", lambda x: x.to(torch.uint8)), TypeError, "actions must have"),
        (
            with_("actions", lambda x: x.to(torch.complex64)),
            TypeError,
            "actions must have",
        ),
        (with_("actions", lambda x: x[0]), ValueError, "actions has shape"),
        (with_("actions", lambda x: x[:0]), ValueError, "B >= 1"),
        (with_("actions", lambda x: x[:, :0]), ValueError, "T >= 1"),
        (with_("actions", lambda x: x - 2), ValueError, "actions must be >= 0"),
        (with_("actions", lambda x: x.to(META)), ValueError, "actions is a meta"),
        (
            with_("actions", lambda x: x.tolist()),
            TypeError,
            "actions must be a torch.Tensor",
        ),
        (
            with_("log_probs", lambda x: x.long()),
            TypeError,
            "log_probs must have a float",
        ),
        (with_("log_probs", lambda x: x[:, :2]), ValueError, "log_probs has shape"),
        (
            with_("log_probs", lambda x: x * math.nan),
            ValueError,
            "log_probs must not be NaN",
        ),
        (with_("log_probs", lambda x: x.to(META)), ValueError, "log_probs is a meta"),
        (with_("rewards", lambda x: x.double()), TypeError, "rewards must be float32"),
        (with_("rewards", lambda x: x.long()), TypeError, "rewards must have a float"),
        (
            with_("rewards", lambda x: x.to(torch.complex64)),
            TypeError,
            "rewards must have",
        ),
        (with_("rewards", lambda x: x[:, None]), ValueError, "rewards has shape"),
        (
            with_("rewards", lambda x: x * math.nan),
            ValueError,
            "rewards must be finite",
        ),
        (
            with_("rewards", lambda x: x * math.inf),
            ValueError,
            "rewards must be finite",
        ),
        (with_("rewards", lambda x: x.to(META)), ValueError, "rewards is a meta"),
        (
            with_("terminated", lambda x: x.float()),
            TypeError,
            "terminated must have dtype",
        ),
        (with_("terminated", lambda x: x[:, :2]), ValueError, "terminated has shape"),
        (with_("terminated", flag_twice), ValueError, "one per row"),
        (
            with_("terminated", lambda x: x | torch.eye(B, T, dtype=torch.bool)),
            ValueError,
            "one per row",
        ),  # fmt: skip
        (with_("terminated", lambda x: x.to(META)), ValueError, "terminated is a meta"),
        (with_("truncated", lambda x: x.int()), TypeError, "truncated must have dtype"),
        (with_("truncated", lambda x: x | x.roll(1, 0)), ValueError, "one per row"),
        (with_("truncated", torch.zeros_like), ValueError, "one per row"),
        (
            with_("mask", lambda x: x.float()),
            TypeError,
            "mask must have dtype torch.bool",
        ),
        (with_("mask", lambda x: x.to(torch.uint8)), TypeError, "mask must have dtype"),
        (with_("mask", lambda x: x[:, :2]), ValueError, "mask has shape"),
        (with_("mask", gap), ValueError, "mask has a gap"),
        (
            with_("mask", lambda x: x & False),
            ValueError,
            "every row needs a real first",
        ),
        (with_("mask", lambda x: x.to(META)), ValueError, "mask is a meta"),
        (good_fields() | dict(group_size=3), ValueError, "groups of 3"),
        (good_fields() | dict(group_size=0), ValueError, "group_size"),
        (good_fields() | dict(group_size=2.0), TypeError, "group_size"),
        (good_fields() | dict(group_size=True), TypeError, "group_size"),
        (
            good_fields() | dict(ref_log_probs=torch.zeros(B, T + 1)),
            ValueError,
            "ref_log_probs has shape",
        ),  # fmt: skip
        (
            good_fields() | dict(ref_log_probs=torch.zeros(B, T, dtype=torch.long)),
            TypeError,
            "ref_log_probs must have",
        ),  # fmt: skip
        (
            good_fields() | dict(values=[0.0] * B),
            TypeError,
            "values must be a torch.Tensor",
        ),
        (
            good_fields() | dict(values=torch.zeros(B, T, device=META)),
            ValueError,
            "values is a meta",
        ),  # fmt: skip
    ],
)
def test_trajectory_bad_input(fields, error, message):
    if error is None:
        Trajectory(**fields)
        return
    with pytest.raises(error, match=message):
        Trajectory(**fields)
