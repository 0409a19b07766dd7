import pytest
import torch
from torch import nn
from torch.distributions import Categorical

from plainrl.checks import check, resolve_device
from plainrl.policy import KVCache, MLPPolicy, TabularPolicy, TransformerPolicy


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == auto
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    for bad in ["gpu", "cuda:x"]:
        with pytest.raises(ValueError, match="not a device"):
            resolve_device(bad)
    with pytest.raises(TypeError, match="device must be"):
        resolve_device(3.5)


def test_policy_names_still_importable_from_policy():
    "Chapters 3-8 imported these from plainrl.policy; they now live in plainrl.checks."
    import plainrl.checks
    import plainrl.policy

    for name in ("check", "check_states", "resolve_device"):
        assert getattr(plainrl.policy, name) is getattr(plainrl.checks, name)


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the message without a GPU"
)
def test_cuda_requested_without_gpu():
    with pytest.raises(ValueError, match="no CUDA device"):
        resolve_device("cuda")


def test_check_raises_with_message():
    check(torch.tensor([True, True]), "never")
    with pytest.raises(ValueError, match="states out"):
        check(torch.tensor([True, False]), "states out")


def test_tabular_policy_is_softmax_of_its_table():
    policy = TabularPolicy(3, 4, device="cpu")
    with torch.no_grad():
        policy.logits.copy_(torch.randn(3, 4))
    states = torch.tensor([[0, 2], [1, 1]])
    dist = policy(states)
    assert isinstance(dist, Categorical) and dist.batch_shape == (2, 2)
    assert torch.allclose(dist.probs, policy.logits.softmax(-1)[states])
    assert torch.allclose(policy(states.int()).probs, dist.probs)  # int32 ids too


def test_log_prob_has_gradient():
    policy = MLPPolicy(4, 2, device="cpu")
    obs = torch.randn(5, 4)
    dist = policy(obs)
    dist.log_prob(dist.sample()).sum().backward()
    assert all(p.grad is not None for p in policy.parameters())


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda p: p(torch.zeros(5, 3)), ValueError, r"expected \[batch..., 4\]"),
        (lambda p: p(torch.zeros(0, 4)), ValueError, "empty batch"),
        (lambda p: p(torch.zeros(5, 4, dtype=torch.long)), TypeError, "floating-point"),
        (lambda p: p(torch.zeros(5, 4, dtype=torch.float64)), TypeError, "float32"),
        (lambda p: p(torch.zeros(5, 4, dtype=torch.complex64)), TypeError, "obs"),
        (lambda p: p(torch.zeros(5, 4, device="meta")), ValueError, "obs is a meta"),
        (lambda p: p([0.0, 0.0, 0.0, 0.0]), TypeError, "torch.Tensor"),
    ],
)
def test_mlp_policy_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call(MLPPolicy(4, 2, device="cpu"))


@pytest.mark.parametrize(
    "states, error, message",
    [
        (torch.tensor([0, 3]), ValueError, r"\[0, 3\)"),
        (torch.tensor([-1]), ValueError, r"\[0, 3\)"),
        (torch.tensor([0.0]), TypeError, "integer"),
        (torch.tensor([0, 1], dtype=torch.uint8), TypeError, "uint8"),
        (torch.tensor([True, False]), TypeError, "integer"),
        (torch.tensor([], dtype=torch.long), ValueError, "empty batch"),
        (torch.zeros(2, dtype=torch.long, device="meta"), ValueError, "meta"),
    ],
)
def test_tabular_policy_bad_input(states, error, message):
    with pytest.raises(error, match=message):
        TabularPolicy(3, 2, device="cpu")(states)


def test_bad_device_string():
    with pytest.raises(ValueError, match="not a device"):
        MLPPolicy(4, 2, device="gpu0")


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
    assert not torch.allclose(lm.logits(a)[:, 3], lm.logits(b)[:, 3], atol=1e-6)


def test_transformer_policy_batch_dims_and_temperature():
    torch.manual_seed(0)
    lm = TransformerPolicy(vocab_size=7, block_size=6, device="cpu")
    tokens = torch.randint(0, 6, (2, 3, 4))
    dist = lm(tokens, temperature=0.5)
    assert dist.batch_shape == (2, 3)
    flat = lm.logits(tokens.reshape(6, 4))[:, -1] / 0.5
    assert torch.allclose(dist.logits.reshape(6, -1), flat.log_softmax(-1), atol=1e-6)
    tiny = lm(tokens, temperature=1e-6)  # tiny but finite: (almost) greedy
    assert torch.equal(tiny.probs.argmax(-1).reshape(6), flat.argmax(-1))


@pytest.mark.parametrize(
    "tokens, kwargs, error, message",
    [
        (torch.zeros(1, 7, dtype=torch.long), {}, ValueError, "length <= 6"),
        (torch.full((1, 3), 9), {}, ValueError, r"\[0, 7\)"),
        (torch.zeros(1, 3), {}, TypeError, "integer"),
        (torch.zeros(1, 3, dtype=torch.uint8), {}, TypeError, "uint8"),
        (
            torch.zeros(1, 3, dtype=torch.long),
            {"temperature": 0.0},
            ValueError,
            "temperature",
        ),
        (
            torch.zeros(1, 3, dtype=torch.long),
            {"temperature": 1e-45},
            ValueError,
            "overflow",
        ),
        (
            torch.zeros(1, 3, dtype=torch.long),
            {"temperature": float("nan")},
            ValueError,
            "temperature",
        ),
        (torch.zeros(1, 3, dtype=torch.long, device="meta"), {}, ValueError, "meta"),
    ],
)
def test_transformer_policy_bad_input(tokens, kwargs, error, message):
    lm = TransformerPolicy(vocab_size=7, block_size=6, device="cpu")
    with pytest.raises(error, match=message):
        lm(tokens, **kwargs)


def small_lm(seed=0, **kwargs):
    torch.manual_seed(seed)
    return TransformerPolicy(
        13, 10, d_model=16, n_head=2, n_layer=2, device="cpu", **kwargs
    )


def left_padded_prompts(lm, lengths, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts = torch.full((len(lengths), width), lm.pad_id)
    for row, n in enumerate(lengths):
        prompts[row, width - n :] = torch.randint(0, lm.n_actions, (n,), generator=g)
    return prompts


@pytest.mark.parametrize("chunk", [1, 2])
def test_cache_equals_the_full_forward_pass(chunk):
    lm = small_lm()
    prompts = left_padded_prompts(lm, [4, 2, 1], width=4)
    new = torch.randint(
        0, lm.n_actions, (3, 4), generator=torch.Generator().manual_seed(1)
    )
    new[1, 2:] = lm.pad_id  # a finished row reads padding after its answer
    cache = KVCache(lm, batch_size=3, max_len=8)
    with torch.no_grad():
        steps = [lm.logits(prompts, cache)]
        steps += [lm.logits(new[:, i : i + chunk], cache) for i in range(0, 4, chunk)]
        full = lm.logits(torch.cat([prompts, new], 1))
    assert [s.shape[1] for s in steps] == [4] + [chunk] * (4 // chunk)
    cached = torch.cat(steps, 1)
    assert (
        cached.shape == full.shape == (3, 8, lm.n_actions)
        and cached.dtype == torch.float32
    )
    assert torch.allclose(cached, full, atol=1e-5)
    assert cache.length == 8 and cache.pos.tolist() == [8, 4, 5]


def test_cache_is_for_sampling_only():
    "Later writes into the cache would overwrite tensors saved for the backward pass."
    lm = small_lm()
    with pytest.raises(RuntimeError, match="no_grad"):
        lm.logits(torch.zeros(2, 3, dtype=torch.long), KVCache(lm, 2, 4))


def test_cache_in_bfloat16_matches_the_bfloat16_full_pass():
    lm = small_lm(compute_dtype=torch.bfloat16)
    prompts = left_padded_prompts(lm, [4, 2], width=4)
    cache = KVCache(lm, 2, 6)
    assert cache.k.dtype == torch.bfloat16
    with torch.no_grad():
        steps = [lm.logits(prompts, cache), lm.logits(prompts[:, -2:-1], cache)]
        steps.append(lm.logits(prompts[:, -1:], cache))
        full = lm.logits(torch.cat([prompts, prompts[:, -2:]], 1))
    assert torch.cat(steps, 1).dtype == torch.float32
    assert torch.allclose(torch.cat(steps, 1), full, atol=0.05)


def linear_output_dtypes(lm, tokens):
    "The dtypes every nn.Linear of `lm` produces in one call of `lm.logits(tokens)`."
    seen = set()
    hooks = [
        m.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
        for m in lm.modules()
        if isinstance(m, nn.Linear)
    ]
    with torch.no_grad():
        out = lm.logits(tokens)
    for h in hooks:
        h.remove()
    return seen, out


def test_compute_dtype_bfloat16_computes_in_bfloat16():
    lm = small_lm()
    tokens = left_padded_prompts(lm, [5, 3], width=5)
    seen32, z32 = linear_output_dtypes(lm, tokens)
    lm.compute_dtype = torch.bfloat16
    seen16, z16 = linear_output_dtypes(lm, tokens)
    assert seen32 == {torch.float32} and seen16 == {torch.bfloat16}
    assert z32.dtype == z16.dtype == torch.float32
    assert lm.head.weight.dtype == torch.float32  # the weights stay float32
    gap = (z16 - z32).abs().max()
    assert 0 < gap < 0.1
    dist = lm(tokens)
    assert dist.logits.dtype == torch.float32
    dist.log_prob(dist.sample()).sum().backward()
    assert lm.head.weight.grad.dtype == torch.float32


def test_compute_dtype_is_validated():
    lm = small_lm()
    for bad in (torch.float16, torch.float64):
        with pytest.raises(ValueError, match="compute_dtype"):
            lm.compute_dtype = bad
    with pytest.raises(TypeError, match="compute_dtype"):
        lm.compute_dtype = "bfloat16"
    assert lm.compute_dtype is None


@torch.no_grad()
def test_cache_refuses_misuse():
    lm = small_lm()
    cache = KVCache(lm, 2, 4)
    lm.logits(torch.zeros(2, 3, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="max_len"):
        lm.logits(torch.zeros(2, 2, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="batch_size"):
        lm.logits(torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="another policy"):
        small_lm().logits(torch.zeros(2, 1, dtype=torch.long), cache)
    long_cache = KVCache(lm, 1, 20)
    lm.logits(
        torch.zeros(1, 10, dtype=torch.long), long_cache
    )  # block_size real tokens
    with pytest.raises(ValueError, match="block_size"):
        lm.logits(torch.zeros(1, 1, dtype=torch.long), long_cache)


def test_policies_read_nothing_back_but_through_check(host_reads):
    "On a GPU a host read would sync every step; the only one allowed is check's (CPU)."
    tab = TabularPolicy(3, 2, device="cpu")
    mlp = MLPPolicy(4, 2, device="cpu")
    lm = small_lm()
    tokens = torch.zeros(2, 3, dtype=torch.long)
    with host_reads() as allowed:
        tab(torch.tensor([0, 2])).sample()
        mlp(torch.zeros(3, 4)).sample()
        lm(tokens, temperature=0.5).sample()
        with torch.no_grad():
            cache = KVCache(lm, 2, 4)
            lm.logits(tokens, cache)
            lm.logits(tokens[:, :1], cache)
        lm.compute_dtype = torch.bfloat16
        lm.logits(tokens)
    assert set(allowed) == {("plainrl.checks", "check")}
    with pytest.raises(AssertionError, match="host read"):
        with host_reads():
            tokens.sum().item()
