"""plainrl.envs.cartpole.CartPole against Gymnasium's CartPole-v1, step by step.

Both start from the same state (Gymnasium's reset state, copied into `env.state`) and
receive the same actions; every observation, reward, `terminated` and `truncated` is
compared until the episode ends."""

import numpy as np
import pytest
import torch

from plainrl.envs.cartpole import CartPole
from plainrl.trajectory import rollout

gym = pytest.importorskip("gymnasium")

GAINS = np.array(
    [0.1, 0.5, 1.0, 0.5]
)  # push right when 0.1 x + 0.5 x_dot + theta + 0.5 theta_dot > 0


def random_actions(obs, rng):
    return rng.integers(0, 2, len(obs))


def controller(obs, rng):
    return (obs.astype(np.float64) @ GAINS > 0).astype(np.int64)


def side_by_side(n, choose, seed, last_state=None):
    """Run n Gymnasium episodes and one CartPole(n) in lockstep, with the actions
    `choose(gym_obs, rng)`; `last_state`, if given, is written into both before the
    500th step. Returns the episode lengths, the final (terminated, truncated) flags,
    the number of steps compared and the largest observation difference."""
    gyms = [gym.make("CartPole-v1") for _ in range(n)]
    obs = np.stack([g.reset(seed=seed + i)[0] for i, g in enumerate(gyms)])
    env = CartPole(n, device="cpu", seed=seed)
    env.reset()
    env.state = torch.from_numpy(np.stack([g.unwrapped.state for g in gyms]))
    assert np.array_equal(env.state.float().numpy(), obs)
    rng = np.random.default_rng(seed)
    live, lengths = np.ones(n, dtype=bool), np.zeros(n, dtype=int)
    flags, compared, gap = np.zeros((n, 2), dtype=bool), 0, 0.0
    while live.any():
        if last_state is not None and lengths[live].min() == 499:
            for i in np.flatnonzero(live):
                gyms[i].unwrapped.state = np.array(last_state, dtype=np.float64)
            state = env.state
            state[torch.from_numpy(live)] = torch.tensor(
                last_state, dtype=torch.float64
            )
            env.state = state
        actions = choose(obs, rng)
        before = env.state
        ours_obs, ours_r, ours_term, ours_trunc = (
            x.numpy() for x in env.step(torch.from_numpy(actions))
        )
        idx = np.flatnonzero(live)
        results = [gyms[i].step(int(actions[i])) for i in idx]
        o = np.stack([r[0] for r in results])
        r, term, trunc = (np.array([res[k] for res in results]) for k in (1, 2, 3))
        gap, compared = max(gap, np.abs(ours_obs[idx] - o).max()), compared + len(idx)
        assert np.array_equal(ours_r[idx], r.astype(np.float32)), "rewards differ"
        assert np.array_equal(ours_term[idx], term) and np.array_equal(
            ours_trunc[idx], trunc
        ), "flags differ"
        done = ~live  # finished copies are frozen: same state, reward 0, no flags
        assert torch.equal(
            env.state[torch.from_numpy(done)], before[torch.from_numpy(done)]
        )
        assert not (
            ours_r[done].any() or ours_term[done].any() or ours_trunc[done].any()
        )
        obs[idx], lengths[idx] = o, lengths[idx] + 1
        flags[idx] = np.stack([term, trunc], 1)
        live[idx] = ~(term | trunc)
    return lengths, flags, compared, gap


def test_random_episodes_match_gymnasium():
    lengths, flags, compared, gap = side_by_side(1000, random_actions, seed=0)
    print(f"1000 random episodes, {compared} steps compared, largest gap {gap:.1e}")
    assert gap <= 1e-6
    assert (
        flags[:, 0].all() and not flags[:, 1].any()
    )  # random actions: every pole falls before 500 steps
    assert compared == lengths.sum() and lengths.min() >= 8


def test_controlled_episodes_reach_the_time_limit():
    lengths, flags, compared, gap = side_by_side(100, controller, seed=10_000)
    print(f"100 controlled episodes, {compared} steps compared, largest gap {gap:.1e}")
    assert gap <= 1e-6
    assert (lengths == 500).all() and flags[:, 1].all() and not flags[:, 0].any()


def test_falling_on_the_500th_step_is_terminated_and_truncated():
    # Before the 500th step both get a state that falls at once: TimeLimit reports both.
    lengths, flags, compared, gap = side_by_side(
        4, controller, seed=20_000, last_state=[0.0, 0.0, 0.2, 2.0]
    )
    assert gap <= 1e-6 and (lengths == 500).all() and flags.all()


class FromGym(CartPole):
    "A CartPole whose reset() starts every copy from Gymnasium's reset state."

    def __init__(self, gyms, seed):
        super().__init__(len(gyms), device="cpu")
        self.gyms, self.seed = gyms, seed

    def reset(self):
        super().reset()
        for i, g in enumerate(self.gyms):
            g.reset(seed=self.seed + i)
        self.state = torch.from_numpy(np.stack([g.unwrapped.state for g in self.gyms]))
        return self.state.float()


@pytest.mark.parametrize("sign, ended", [(1.0, "truncated"), (-1.0, "terminated")])
def test_rollout_reports_terminated_and_truncated_like_gymnasium(sign, ended):
    # the controller balances (every episode truncated at 500); reversed, it topples it
    def policy(obs):
        push = (obs.double() @ torch.from_numpy(sign * GAINS) > 0).long()
        return torch.distributions.Categorical(probs=torch.eye(2)[push])

    n = 20
    gyms = [gym.make("CartPole-v1") for _ in range(n)]
    traj = rollout(FromGym(gyms, seed=30_000), policy)
    for i, g in enumerate(gyms):  # the same actions in Gymnasium, to the episode's end
        flags = []
        for t in range(traj.lengths[i].item()):
            _, reward, term, trunc, _ = g.step(int(traj.actions[i, t]))
            assert reward == traj.rewards[i, t]
            flags.append((term, trunc))
        assert not any(a or b for a, b in flags[:-1])  # Gymnasium ends where we do
        ours = traj.terminated[i].any().item(), traj.truncated[i].any().item()
        assert flags[-1] == ours and ours[0] != ours[1]
    assert getattr(traj, ended).any(1).all()
