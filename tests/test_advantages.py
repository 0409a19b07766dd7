"""plainrl.advantages (chapter 7): reward-to-go, the baselines (moving average, batch
mean, leave-one-out, group mean, GRPO's std) and the weigh stage that combines them."""

import pytest
import torch

from plainrl.advantages import (
    BASELINES,
    GRPO_EPS,
    VARIANTS,
    MovingAverageBaseline,
    Weights,
    batch_mean_baseline,
    group_mean_baseline,
    group_std,
    leave_one_out_baseline,
    reward_to_go,
    weigh,
)
from plainrl.trajectory import Trajectory


def pg_weights(traj, variant, gamma=1.0, baseline=None):
    "The weights of one of chapter 7's four named variants."
    returns, kind = VARIANTS[variant]
    return weigh(traj, returns, kind, gamma, baseline)


def reference_reward_to_go(rewards, gamma, lengths):
    "Eqs. 13–14 in plain Python: R̂_t = Σ_{t'≥t} γ^{t'-t} r_{t'} in an episode, 0 after."
    out = [[0.0] * len(row) for row in rewards]
    for b, row in enumerate(rewards):
        for t in range(lengths[b]):
            out[b][t] = sum(gamma ** (u - t) * row[u] for u in range(t, lengths[b]))
    return out


def padded_batch(B=5, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]
    rewards = torch.where(mask, torch.randn(B, T, generator=g), 0.0)
    return rewards, mask, lengths.tolist()


def make_traj(rewards, mask, group_size=1):
    "A Trajectory with these rewards, every episode terminated at its last real step."
    B, T = rewards.shape
    last = mask & ~torch.cat([mask[:, 1:], torch.zeros(B, 1, dtype=torch.bool)], 1)
    zeros = torch.zeros(B, T, dtype=torch.long)
    return Trajectory(
        obs=zeros,
        actions=zeros,
        log_probs=torch.zeros(B, T),
        rewards=rewards,
        terminated=last,
        truncated=torch.zeros_like(mask),
        mask=mask,
        group_size=group_size,
    )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99, 1.0])
def test_reward_to_go_matches_python_reference(gamma):
    rewards, mask, lengths = padded_batch()
    expected = torch.tensor(reference_reward_to_go(rewards.tolist(), gamma, lengths))
    assert torch.allclose(reward_to_go(rewards, gamma, mask), expected, atol=1e-5)


def test_reward_to_go_ignores_rewards_on_padded_steps():
    rewards, mask, lengths = padded_batch()
    noisy = torch.where(mask, rewards, 123.0)  # garbage where the episode has ended
    assert torch.equal(reward_to_go(noisy, 0.9, mask), reward_to_go(rewards, 0.9, mask))
    assert (reward_to_go(noisy, 0.9, mask)[~mask] == 0).all()


def test_reward_to_go_at_step_zero_is_the_return():
    rewards, mask, _ = padded_batch()
    for gamma in (0.7, 1.0):
        discounts = gamma ** torch.arange(rewards.shape[1], dtype=torch.float32)
        assert torch.allclose(
            reward_to_go(rewards, gamma, mask)[:, 0],
            (rewards * mask * discounts).sum(1),
            atol=1e-5,
        )


def test_reward_to_go_of_a_terminal_reward_is_the_same_at_every_step():
    rewards = torch.zeros(3, 6)
    rewards[:, -1] = torch.tensor([1.0, 0.0, 0.25])
    assert torch.equal(reward_to_go(rewards), rewards[:, -1:].expand(3, 6))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: reward_to_go([[1.0, 2.0]]), TypeError, "torch.Tensor"),
        (
            lambda: reward_to_go(torch.ones(2, 3, dtype=torch.long)),
            TypeError,
            "floating",
        ),
        (lambda: reward_to_go(torch.ones(2, 3), gamma=1.5), ValueError, "gamma"),
        (lambda: reward_to_go(torch.ones(2, 3), gamma=-0.1), ValueError, "gamma"),
        (
            lambda: reward_to_go(
                torch.ones(2, 3), mask=torch.ones(2, 4, dtype=torch.bool)
            ),
            ValueError,
            "shape",
        ),
        (lambda: reward_to_go(torch.ones(6)), ValueError, "shape"),
        (
            lambda: reward_to_go(torch.tensor([[1.0, float("nan")]])),
            ValueError,
            "finite",
        ),
        (
            lambda: reward_to_go(
                torch.ones(1, 3), mask=torch.tensor([[True, False, True]])
            ),
            ValueError,
            "gap",
        ),
    ],
)
def test_reward_to_go_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_moving_average_baseline_values():
    b = MovingAverageBaseline(beta=0.5)
    assert b(torch.tensor([1.0, 3.0])) == 0.0  # starts at 0
    assert b(torch.tensor([5.0, 5.0])) == 1.0  # 0.5 * 0 + 0.5 * 2
    assert b(torch.tensor([0.0, 0.0])) == 3.0  # 0.5 * 1 + 0.5 * 5
    assert b.value == 1.5


def test_moving_average_baseline_does_not_peek_at_the_batch():
    a, b = MovingAverageBaseline(0.9), MovingAverageBaseline(0.9)
    for x in (torch.tensor([1.0, 2.0]), torch.tensor([4.0, 0.0])):
        a(x), b(x)
    # the value for this batch is the same whatever the batch holds: fixed before it
    assert a(torch.tensor([100.0, 100.0])) == b(torch.tensor([-7.0, 3.0]))


def test_moving_average_baseline_per_time_step_with_padding():
    b = MovingAverageBaseline(beta=0.5)
    targets = torch.tensor([[4.0, 2.0, 1.0], [2.0, 0.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert torch.equal(b(targets, mask), torch.zeros(3))
    assert torch.equal(
        b(targets[:, :2], mask[:, :2]), torch.tensor([1.5, 0.5])
    )  # means [3, 1, 1] halved
    assert torch.equal(
        b(targets, mask), torch.tensor([2.25, 0.75, 0.5])
    )  # step 2 was not in the last batch
    bad = MovingAverageBaseline()
    bad(torch.ones(2))
    with pytest.raises(ValueError, match="dims"):
        bad(torch.ones(2, 3))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: MovingAverageBaseline(beta=1.0), ValueError, "beta"),
        (
            lambda: MovingAverageBaseline()(torch.ones(2, dtype=torch.long)),
            TypeError,
            "floating",
        ),
        (lambda: MovingAverageBaseline()(torch.ones(2, 3, 4)), ValueError, "shape"),
        (lambda: MovingAverageBaseline()(torch.ones(0)), ValueError, "shape"),
        (
            lambda: MovingAverageBaseline()(
                torch.ones(2, 3), torch.ones(2, 2, dtype=torch.bool)
            ),
            ValueError,
            "mask",
        ),
    ],
)
def test_moving_average_baseline_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_batch_mean_and_leave_one_out_baselines():
    returns = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    assert torch.equal(batch_mean_baseline(returns), torch.full((6,), 11.0))
    assert torch.equal(
        leave_one_out_baseline(returns, 3),
        torch.tensor([2.5, 2.0, 1.5, 25.0, 20.0, 15.0]),
    )
    assert torch.equal(
        leave_one_out_baseline(returns, 6), (returns.sum() - returns) / 5
    )
    # the batch mean holds the sample itself with weight 1/B: x/B + (B-1)/B · LOO
    B = len(returns)
    assert torch.allclose(
        batch_mean_baseline(returns),
        returns / B + (B - 1) / B * leave_one_out_baseline(returns, B),
    )


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: leave_one_out_baseline(torch.ones(6), 4), ValueError, "groups of"),
        (lambda: leave_one_out_baseline(torch.ones(6), 1), ValueError, "group_size"),
        (lambda: leave_one_out_baseline(torch.ones(6), 2.0), TypeError, "group_size"),
        (lambda: leave_one_out_baseline(torch.ones(2, 3, 1), 2), ValueError, "shape"),
        (lambda: group_std(torch.ones(6), 1), ValueError, "group_size"),
        (lambda: group_mean_baseline(torch.ones(6), 4), ValueError, "groups of"),
        (
            lambda: batch_mean_baseline(torch.ones(3, dtype=torch.long)),
            TypeError,
            "floating",
        ),
        (lambda: batch_mean_baseline([1.0, 2.0]), TypeError, "torch.Tensor"),
    ],
)
def test_baselines_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_pg_weights_of_each_variant():
    rewards, mask, lengths = padded_batch()
    traj = make_traj(rewards, mask)
    gamma = 0.9
    rtg = torch.tensor(reference_reward_to_go(rewards.tolist(), gamma, lengths))
    R = rtg[:, :1].expand_as(rtg) * mask
    assert torch.allclose(pg_weights(traj, "vanilla", gamma), R, atol=1e-5)
    assert torch.allclose(pg_weights(traj, "rtg", gamma), rtg, atol=1e-5)
    baseline = MovingAverageBaseline(beta=0.5)
    assert torch.allclose(
        pg_weights(traj, "baseline", gamma, baseline), R, atol=1e-5
    )  # b starts at 0
    b = 0.5 * R[:, 0].mean()
    assert torch.allclose(
        pg_weights(traj, "baseline", gamma, baseline), (R - b) * mask, atol=1e-5
    )
    baseline = MovingAverageBaseline(beta=0.5)
    pg_weights(traj, "rtg+baseline", gamma, baseline)
    b_t = 0.5 * (rtg * mask).sum(0) / mask.sum(0)
    assert torch.allclose(
        pg_weights(traj, "rtg+baseline", gamma, baseline), (rtg - b_t) * mask, atol=1e-5
    )
    for variant in VARIANTS:
        assert (
            pg_weights(traj, variant, gamma, MovingAverageBaseline())[~mask] == 0
        ).all()


@pytest.mark.parametrize(
    "variant, baseline, error, message",
    [
        ("reinforce", None, ValueError, "baseline must be one of"),
        ("moving_average", None, TypeError, "MovingAverageBaseline"),
        ("moving_average", 0.5, TypeError, "MovingAverageBaseline"),
        ("leave_one_out", None, ValueError, "group_size"),
    ],
)
def test_weigh_bad_input(variant, baseline, error, message):
    rewards, mask, _ = padded_batch()
    with pytest.raises(error, match=message):
        weigh(make_traj(rewards, mask), "return", variant, 1.0, baseline)


def test_group_baselines_by_hand():
    R = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    mean = group_mean_baseline(R, 4)
    assert torch.equal(mean, torch.tensor([0.25] * 4 + [0.75] * 4))
    loo = leave_one_out_baseline(R, 4)
    assert torch.allclose(R - mean, 3 / 4 * (R - loo))  # the (G-1)/G of the chapter
    std = group_std(R, 4)
    assert torch.allclose(std, torch.tensor([0.5] * 8))  # the sample std of 1, 0, 0, 0
    assert torch.equal(group_std(torch.ones(4), 4), torch.zeros(4))


def test_group_baselines_per_time_step_skip_finished_rows():
    targets = torch.tensor([[2.0, 1.0], [4.0, 9.0], [6.0, 5.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True], [True, False], [True, True], [True, False]])
    mean = group_mean_baseline(targets, 2, mask)
    assert torch.equal(mean[:2], torch.tensor([[3.0, 1.0], [3.0, 1.0]]))
    loo = leave_one_out_baseline(targets, 2, mask)
    assert torch.equal(loo[:, 0], torch.tensor([4.0, 2.0, 0.0, 6.0]))
    assert loo[0, 1] == 0.0  # no other row of its group is still running at t = 1


def test_leave_one_out_is_unbiased_and_the_group_mean_shrinks_by_G_minus_1_over_G():
    # per answer i, E[R_i - b_i] over the other answers' draws: LOO keeps E[R_i] - E[R]
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.2, 0.7])  # two prompts of different difficulty
    G, groups = 4, 20_000
    R = (torch.rand(groups, 2, G, generator=g) < p[None, :, None]).float()
    R = R.reshape(-1)
    loo = (R - leave_one_out_baseline(R, G)).view(groups, 2, G)
    mean = (R - group_mean_baseline(R, G)).view(groups, 2, G)
    first = R.view(groups, 2, G)[..., 0] == 1  # condition on answer 0 being right
    # E[R_0 - b_0 | R_0 = 1] = 1 - p for LOO, (G-1)/G (1 - p) for the group mean
    for k in range(2):
        rows = first[:, k]
        assert loo[rows, k, 0].mean().item() == pytest.approx(1 - p[k].item(), abs=0.02)
        expected = (G - 1) / G * (1 - p[k].item())
        assert mean[rows, k, 0].mean().item() == pytest.approx(expected, abs=0.02)


def test_grpo_rescales_each_group_by_its_spread():
    R = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    traj = make_traj(
        torch.stack([torch.zeros(8), R], 1), torch.ones(8, 2, dtype=torch.bool), 4
    )
    w = weigh(traj, baseline="group_mean_std")[:, -1]
    centred = R - group_mean_baseline(R, 4)
    assert torch.allclose(w, centred / (group_std(R, 4) + GRPO_EPS))
    # both groups have the same std, so here GRPO is the group mean scaled by 1/std
    assert torch.allclose(w[:4], -w[4:].flip(0))


@pytest.mark.parametrize("baseline", BASELINES)
@pytest.mark.parametrize("returns", ["return", "reward_to_go"])
def test_every_combination_is_reachable_and_zero_on_padding(returns, baseline):
    rewards, mask, _ = padded_batch(B=6)
    traj = make_traj(rewards, mask, group_size=3)
    weights = Weights(returns, baseline)
    w = weights(traj)
    assert w.shape == rewards.shape and torch.isfinite(w).all()
    assert (w[~mask] == 0).all()


def test_weights_keep_and_restore_the_moving_average():
    rewards, mask, _ = padded_batch()
    traj = make_traj(rewards, mask)
    a = Weights("reward_to_go", "moving_average", beta=0.5)
    a(traj)
    b = Weights("reward_to_go", "moving_average", beta=0.5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(traj), b(traj))
    with pytest.raises(ValueError, match="returns"):
        Weights("future")
    with pytest.raises(ValueError, match="gamma"):
        Weights(gamma=1.5)
