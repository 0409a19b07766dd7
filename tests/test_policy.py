import pytest
import torch
from torch.distributions import Categorical

from plainrl.policy import MLPPolicy, TabularPolicy, TransformerPolicy, check, resolve_device


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ["gpu", "cuda:x", 3.5]:
        with pytest.raises(ValueError, match="not a device"): resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a missing GPU")
def test_cuda_requested_without_gpu():
    with pytest.raises(ValueError, match="no CUDA device"): resolve_device("cuda")


def test_check_raises_with_message():
    check(torch.tensor([True, True]), "never")
    with pytest.raises(ValueError, match="states out"): check(torch.tensor([True, False]), "states out")


def test_tabular_policy_is_softmax_of_its_table():
    policy = TabularPolicy(3, 4, device="cpu")
    with torch.no_grad(): policy.logits.copy_(torch.randn(3, 4))
    states = torch.tensor([[0, 2], [1, 1]])
    dist = policy(states)
    assert isinstance(dist, Categorical) and dist.batch_shape == (2, 2)
    assert torch.allclose(dist.probs, policy.logits.softmax(-1)[states])


def test_log_prob_has_gradient():
    policy = MLPPolicy(4, 2, device="cpu")
    obs = torch.randn(5, 4)
    dist = policy(obs)
    dist.log_prob(dist.sample()).sum().backward()
    assert all(p.grad is not None for p in policy.parameters())


@pytest.mark.parametrize("call, error, message", [
    (lambda p: p(torch.zeros(5, 3)), ValueError, r"expected \[batch..., 4\]"),
    (lambda p: p(torch.zeros(0, 4)), ValueError, "empty batch"),
    (lambda p: p(torch.zeros(5, 4, dtype=torch.long)), TypeError, "floating-point"),
    (lambda p: p([0.0, 0.0, 0.0, 0.0]), TypeError, "torch.Tensor"),
])
def test_mlp_policy_bad_input(call, error, message):
    with pytest.raises(error, match=message): call(MLPPolicy(4, 2, device="cpu"))


@pytest.mark.parametrize("states, error, message", [
    (torch.tensor([0, 3]), ValueError, r"\[0, 3\)"),
    (torch.tensor([-1]), ValueError, r"\[0, 3\)"),
    (torch.tensor([0.0]), TypeError, "integer"),
    (torch.tensor([], dtype=torch.long), ValueError, "empty batch"),
])
def test_tabular_policy_bad_input(states, error, message):
    with pytest.raises(error, match=message): TabularPolicy(3, 2, device="cpu")(states)


def test_bad_device_string():
    with pytest.raises(ValueError, match="not a device"): MLPPolicy(4, 2, device="gpu0")


def test_transformer_policy_ignores_left_padding():
    torch.manual_seed(0)
    lm = TransformerPolicy(vocab_size=7, block_size=6, device="cpu")
    prefix = torch.tensor([[1, 2, 3]])
    padded = torch.cat([torch.full((1, 3), lm.pad_id), prefix], dim=1)
    assert torch.allclose(lm(prefix).probs, lm(padded).probs, atol=1e-6)
    assert lm(prefix).probs.shape == (1, lm.n_actions) == (1, 6)


def test_transformer_policy_is_causal():
    torch.manual_seed(0)
    lm = TransformerPolicy(vocab_size=7, block_size=6, device="cpu")
    a, b = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 2, 3, 5]])
    assert torch.allclose(lm.logits(a)[:, :3], lm.logits(b)[:, :3], atol=1e-6)


def test_transformer_policy_batch_dims_and_temperature():
    torch.manual_seed(0)
    lm = TransformerPolicy(vocab_size=7, block_size=6, device="cpu")
    tokens = torch.randint(0, 6, (2, 3, 4))
    dist = lm(tokens, temperature=0.5)
    assert dist.batch_shape == (2, 3)
    flat = lm.logits(tokens.reshape(6, 4))[:, -1] / 0.5
    assert torch.allclose(dist.logits.reshape(6, -1), flat.log_softmax(-1), atol=1e-6)


@pytest.mark.parametrize("tokens, kwargs, error, message", [
    (torch.zeros(1, 7, dtype=torch.long), {}, ValueError, "length <= 6"),
    (torch.full((1, 3), 9), {}, ValueError, r"\[0, 7\)"),
    (torch.zeros(1, 3), {}, TypeError, "integer"),
    (torch.zeros(1, 3, dtype=torch.long), {"temperature": 0.0}, ValueError, "temperature"),
])
def test_transformer_policy_bad_input(tokens, kwargs, error, message):
    lm = TransformerPolicy(vocab_size=7, block_size=6, device="cpu")
    with pytest.raises(error, match=message): lm(tokens, **kwargs)
