import math

import pytest
import torch

from plainrl.reward import check_rewards, discounts, episode_return

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_return(rewards, gamma, lengths):
    "Eq. 4 with plain Python loops, one episode at a time."
    return [sum(gamma ** t * rewards[b][t] for t in range(lengths[b])) for b in range(len(rewards))]


def random_padded_batch(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    rewards[~mask] = torch.randn(int((~mask).sum()), generator=g, dtype=torch.float64) * 1e3  # junk padding
    return rewards, mask, lengths


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.99, 1.0, 1])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_python_reference(gamma, seed):
    rewards, mask, lengths = random_padded_batch(B=17, T=9, seed=seed)
    expected = reference_return(rewards.tolist(), gamma, lengths.tolist())
    got = episode_return(rewards, gamma, mask)
    assert got.shape == (17,)
    assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_no_mask_means_every_step_is_real():
    rewards = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = reference_return(rewards.tolist(), 0.8, [6] * 4)
    assert torch.allclose(episode_return(rewards, 0.8), torch.tensor(expected, dtype=torch.float64))
    assert torch.equal(check_rewards(rewards), torch.ones(4, 6, dtype=torch.bool))


def test_undiscounted_default_and_geometric_sum():
    assert torch.allclose(episode_return(torch.ones(2, 5)), torch.full((2,), 5.0))
    assert math.isclose(float(episode_return(torch.ones(1, 50, dtype=torch.float64), 0.9)[0]),
                        (1 - 0.9 ** 50) / (1 - 0.9), rel_tol=1e-12)
    assert torch.allclose(discounts(4, 0.5), torch.tensor([1.0, 0.5, 0.25, 0.125]))
    assert discounts(3, 0.0).tolist() == [1.0, 0.0, 0.0]


def test_terminal_reward_return_is_the_score():
    lengths, score = torch.tensor([3, 1, 4]), torch.tensor([1.0, 0.0, 1.0])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    terminal = torch.where(torch.arange(4)[None, :] == (lengths - 1)[:, None], score[:, None], 0.0)
    assert torch.equal(episode_return(terminal, 1.0, mask), score)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("device", DEVICES)
def test_dtype_and_device_preserved(dtype, device):
    rewards = torch.ones(3, 4, dtype=dtype, device=device)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [False] * 4], device=device)
    out = episode_return(rewards, 0.5, mask)
    assert out.dtype == dtype and out.device == rewards.device
    assert torch.allclose(out.float().cpu(), torch.tensor([1.875, 1.5, 0.0]))


def test_padding_may_hold_nan():
    rewards = torch.tensor([[1.0, float("nan"), float("inf")]])
    mask = torch.tensor([[True, False, False]])
    assert torch.equal(episode_return(rewards, 0.9, mask), torch.tensor([1.0]))


GOOD = torch.zeros(2, 3)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(rewards=[[0.0, 1.0]]), TypeError, "torch.Tensor"),
    (dict(rewards=torch.zeros(2, 3, dtype=torch.long)), TypeError, "floating-point"),
    (dict(rewards=torch.zeros(2, 3, dtype=torch.bool)), TypeError, "floating-point"),
    (dict(rewards=torch.zeros(3)), ValueError, r"expected \[B, T\]"),
    (dict(rewards=torch.zeros(2, 3, 1)), ValueError, r"expected \[B, T\]"),
    (dict(rewards=torch.zeros(0, 3)), ValueError, r"expected \[B, T\]"),
    (dict(rewards=torch.zeros(2, 0)), ValueError, r"expected \[B, T\]"),
    (dict(rewards=torch.tensor([[0.0, float("nan")]])), ValueError, "finite"),
    (dict(rewards=torch.tensor([[float("inf"), 0.0]])), ValueError, "finite"),
    (dict(rewards=torch.tensor([[0.0, -float("inf")]])), ValueError, "finite"),
    (dict(gamma=1.01), ValueError, r"\[0, 1\]"),
    (dict(gamma=-0.1), ValueError, r"\[0, 1\]"),
    (dict(gamma=float("nan")), ValueError, r"\[0, 1\]"),
    (dict(gamma="0.9"), TypeError, "real number"),
    (dict(gamma=None), TypeError, "real number"),
    (dict(gamma=True), TypeError, "real number"),
    (dict(gamma=torch.tensor(0.9)), TypeError, "real number"),
    (dict(mask=torch.ones(2, 3)), TypeError, "bool"),
    (dict(mask=[[True] * 3] * 2), TypeError, "bool"),
    (dict(mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, "shape"),
    (dict(mask=torch.ones(3, dtype=torch.bool)), ValueError, "shape"),
    (dict(mask=torch.tensor([[True, False, True], [True] * 3])), ValueError, "gap"),
    (dict(mask=torch.tensor([[False, True, True], [True] * 3])), ValueError, "gap"),
])
def test_bad_input(kwargs, error, message):
    args = dict(rewards=GOOD, gamma=0.9, mask=None) | kwargs
    with pytest.raises(error, match=message): check_rewards(**args)
    with pytest.raises(error, match=message): episode_return(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mask_on_another_device():
    with pytest.raises(ValueError, match="device"):
        episode_return(torch.zeros(2, 3, device="cuda"), mask=torch.ones(2, 3, dtype=torch.bool))
