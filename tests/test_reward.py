import math

import pytest
import torch

from plainrl.reward import check_rewards, discounts, episode_return

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def reference_return(rewards, gamma, lengths):
    "Eq. 4 with plain Python loops, one episode at a time."
    return [
        sum(gamma**t * rewards[b][t] for t in range(lengths[b]))
        for b in range(len(rewards))
    ]


def random_padded_batch(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None, :] < lengths[:, None]
    rewards[~mask] = (
        torch.randn(int((~mask).sum()), generator=g, dtype=torch.float64) * 1e3
    )  # junk padding
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
    rewards = torch.randn(
        4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    expected = reference_return(rewards.tolist(), 0.8, [6] * 4)
    assert torch.allclose(
        episode_return(rewards, 0.8), torch.tensor(expected, dtype=torch.float64)
    )
    assert torch.equal(check_rewards(rewards), torch.ones(4, 6, dtype=torch.bool))


def test_undiscounted_default_and_geometric_sum():
    assert torch.allclose(episode_return(torch.ones(2, 5)), torch.full((2,), 5.0))
    assert math.isclose(
        float(episode_return(torch.ones(1, 50, dtype=torch.float64), 0.9)[0]),
        (1 - 0.9**50) / (1 - 0.9),
        rel_tol=1e-12,
    )
    assert torch.allclose(discounts(4, 0.5), torch.tensor([1.0, 0.5, 0.25, 0.125]))
    assert discounts(3, 0.0).tolist() == [1.0, 0.0, 0.0]


def test_terminal_reward_return_is_the_score():
    lengths, score = torch.tensor([3, 1, 4]), torch.tensor([1.0, 0.0, 1.0])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    terminal = torch.where(
        torch.arange(4)[None, :] == (lengths - 1)[:, None], score[:, None], 0.0
    )
    assert torch.equal(episode_return(terminal, 1.0, mask), score)


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64]
)
@pytest.mark.parametrize("device", DEVICES)
def test_dtype_and_device_preserved(dtype, device):
    rewards = torch.ones(3, 4, dtype=dtype, device=device)
    mask = torch.tensor(
        [[True] * 4, [True, True, False, False], [False] * 4], device=device
    )
    out = episode_return(rewards, 0.5, mask)
    assert out.dtype == dtype and out.device == rewards.device
    assert torch.allclose(out.float().cpu(), torch.tensor([1.875, 1.5, 0.0]))


def test_padding_may_hold_nan():
    rewards = torch.tensor([[1.0, float("nan"), float("inf")]])
    mask = torch.tensor([[True, False, False]])
    assert torch.equal(episode_return(rewards, 0.9, mask), torch.tensor([1.0]))


GOOD = torch.zeros(2, 3)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(rewards=[[0.0, 1.0]]), TypeError, "torch.Tensor"),
        (
            dict(rewards=torch.zeros(2, 3, dtype=torch.long)),
            TypeError,
            "floating-point",
        ),
        (
            dict(rewards=torch.zeros(2, 3, dtype=torch.bool)),
            TypeError,
            "floating-point",
        ),
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
        (dict(mask=[[True] * 3] * 2), TypeError, "mask must be a torch.Tensor"),
        (dict(mask=torch.ones(2, 3, dtype=torch.uint8)), TypeError, "bool"),
        (
            dict(mask=torch.ones(2, 3, dtype=torch.bool, device="meta")),
            ValueError,
            "mask",
        ),
        (
            dict(rewards=torch.zeros(2, 3, dtype=torch.complex64)),
            TypeError,
            "floating-point",
        ),
        (
            dict(rewards=torch.zeros(2, 3, device="meta")),
            ValueError,
            "rewards is a meta",
        ),
        (dict(gamma=0.5j), TypeError, "real number"),
        (dict(mask=torch.ones(2, 4, dtype=torch.bool)), ValueError, "shape"),
        (dict(mask=torch.ones(3, dtype=torch.bool)), ValueError, "shape"),
        (dict(mask=torch.tensor([[True, False, True], [True] * 3])), ValueError, "gap"),
        (dict(mask=torch.tensor([[False, True, True], [True] * 3])), ValueError, "gap"),
    ],
)
def test_bad_input(kwargs, error, message):
    args = dict(rewards=GOOD, gamma=0.9, mask=None) | kwargs
    with pytest.raises(error, match=message):
        check_rewards(**args)
    with pytest.raises(error, match=message):
        episode_return(**args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mask_on_another_device():
    with pytest.raises(ValueError, match="device"):
        episode_return(
            torch.zeros(2, 3, device="cuda"), mask=torch.ones(2, 3, dtype=torch.bool)
        )


def test_mask_on_the_meta_device():
    with pytest.raises(ValueError, match="mask is"):
        episode_return(
            torch.zeros(2, 3), mask=torch.ones(2, 3, dtype=torch.bool, device="meta")
        )


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64]
)
def test_discounts_honour_dtype_and_device(dtype):
    d = discounts(5, 0.5, dtype, device="cpu")
    assert d.dtype == dtype and d.device == torch.device("cpu") and d.shape == (5,)
    assert torch.equal(d.double(), 0.5 ** torch.arange(5, dtype=torch.float64))
    assert discounts(3, 0.9, device=torch.device("cpu")).dtype == torch.float32
    assert discounts(1, 0.0).tolist() == [1.0]  # γ^0 = 1, also for γ = 0


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((0, 0.9), ValueError, "T must"),
        ((2.0, 0.9), TypeError, "T must"),
        ((True, 0.9), TypeError, "T must"),
        ((3, 1.5), ValueError, "gamma"),
        ((3, -0.5), ValueError, "gamma"),
        ((3, float("nan")), ValueError, "gamma"),
        ((3, None), TypeError, "gamma"),
        ((3, 0.9, torch.long), TypeError, "dtype"),
        ((3, 0.9, torch.complex64), TypeError, "dtype"),
        ((3, 0.9, torch.float32, "gpu0"), ValueError, "device"),
    ],
)
def test_discounts_bad_input(args, error, message):
    with pytest.raises(error, match=message):
        discounts(*args)


def test_return_that_overflows_raises_instead_of_inf():
    big = torch.full((2, 4), 2.0**14, dtype=torch.float16)  # 4 * 2^14 > 65504, the max
    mask = torch.tensor([[True] * 4, [True, False, False, False]])
    with pytest.raises(ValueError, match="overflows torch.float16"):
        episode_return(big)
    with pytest.raises(ValueError, match="overflows"):
        episode_return(big, 1.0, mask)
    assert episode_return(big[:, :3]).tolist() == [49152.0, 49152.0]  # fits
    assert episode_return(big, 0.5).tolist() == [30720.0, 30720.0]
    assert episode_return(big.double()).tolist() == [65536.0, 65536.0]
    huge = torch.full((1, 2), 3e38)
    with pytest.raises(ValueError, match="overflows torch.float32"):
        episode_return(huge)
    assert torch.isfinite(episode_return(huge, 0.1)).all()


def test_episode_return_reads_nothing_back_but_through_check():
    from conftest import no_host_reads

    mask = torch.tensor([[True, True, False]])
    with no_host_reads() as allowed:
        episode_return(torch.ones(1, 3), 0.9, mask)
        discounts(3, 0.5)
    assert set(allowed) == {("plainrl.checks", "check")}
