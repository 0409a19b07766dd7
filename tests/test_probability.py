import itertools
import math

import pytest
import torch

from plainrl.envs.tabular import TabularMDP, slippery_chain
from plainrl.policy import TabularPolicy
from plainrl.probability import enumerate_trajectories, log_trajectory_prob

META = torch.device("meta")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_mdp(seed, S=3, A=2, H=3, device="cpu"):
    "A small MDP with some impossible start states and transitions."
    g = torch.Generator().manual_seed(seed)
    initial = torch.rand(S, generator=g) * (
        torch.arange(S) != S - 1
    )  # the last state never starts
    transition = torch.rand(S, A, S, generator=g) * (
        torch.rand(S, A, S, generator=g) < 0.6
    )
    transition[..., 0] += 0.1  # every (s, a) has somewhere to go
    reward = torch.randn(S, A, S, generator=g)
    return TabularMDP(
        initial / initial.sum(),
        transition / transition.sum(-1, keepdim=True),
        reward,
        H,
        device=device,
    )


def random_policy(mdp, seed):
    policy = TabularPolicy(mdp.n_states, mdp.n_actions, device=mdp.device)
    logits = torch.randn(
        mdp.n_states, mdp.n_actions, generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        policy.logits.copy_(logits)
    return policy


def brute_force(mdp, policy, gamma):
    "Eqs. 5 and 4 by Python loops over every (s_0, a_0, ..., s_H): {(s, a): (P, R)}."
    S, A, H = mdp.n_states, mdp.n_actions, mdp.horizon
    p0, P, R = mdp.initial.tolist(), mdp.transition.tolist(), mdp.reward.tolist()
    pi = policy.logits.softmax(-1).tolist()
    out = {}
    for s in itertools.product(range(S), repeat=H + 1):
        for a in itertools.product(range(A), repeat=H):
            prob = p0[s[0]] * math.prod(
                pi[s[t]][a[t]] * P[s[t]][a[t]][s[t + 1]] for t in range(H)
            )
            if prob > 0:
                out[s, a] = (
                    prob,
                    sum(gamma**t * R[s[t]][a[t]][s[t + 1]] for t in range(H)),
                )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_matches_brute_force(seed, gamma):
    mdp = random_mdp(seed)
    policy = random_policy(mdp, seed)
    states, actions, returns = enumerate_trajectories(mdp, gamma)
    prob = log_trajectory_prob(mdp, policy, states, actions).exp()
    reference = brute_force(mdp, policy, gamma)
    keys = [(tuple(s), tuple(a)) for s, a in zip(states.tolist(), actions.tolist())]
    interleaved = [
        tuple(x for t in range(len(a)) for x in (s[t], a[t])) + (s[-1],)
        for s, a in keys
    ]
    assert (
        sorted(interleaved) == interleaved
    )  # lexicographic in (s_0, a_0, s_1, ..., s_H)
    assert set(keys) == set(reference) and len(keys) == len(reference)
    assert torch.allclose(
        prob, torch.tensor([reference[k][0] for k in keys]), rtol=1e-5, atol=1e-9
    )
    assert torch.allclose(
        returns, torch.tensor([reference[k][1] for k in keys]), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "make", [slippery_chain, lambda device: random_mdp(3, S=4, A=3, H=4, device=device)]
)
@pytest.mark.parametrize("device", DEVICES)
def test_probabilities_sum_to_one(make, device):
    mdp = make(device=device)
    policy = random_policy(mdp, 0)
    states, actions, returns = enumerate_trajectories(mdp)
    log_p = log_trajectory_prob(mdp, policy, states, actions)
    assert log_p.device == states.device == returns.device == mdp.initial.device
    assert torch.isfinite(log_p).all() and abs(log_p.exp().sum().item() - 1) < 1e-6


def test_slippery_chain_count():
    states, actions, returns = enumerate_trajectories(slippery_chain(device="cpu"))
    assert (
        states.shape == (512, 5)
        and actions.shape == (512, 4)
        and returns.shape == (512,)
    )
    assert states.dtype == actions.dtype == torch.long


def test_gradient_is_exact():
    mdp = random_mdp(4)
    policy = random_policy(mdp, 4)
    states, actions, returns = enumerate_trajectories(mdp)
    J = (log_trajectory_prob(mdp, policy, states, actions).exp() * returns).sum()
    (grad,) = torch.autograd.grad(J, policy.logits)
    # the same J by the brute-force formula, differentiated through the softmax
    pi = policy.logits.softmax(-1)
    J_ref = sum(
        mdp.initial[s[0]]
        * math.prod(
            pi[s[t], a[t]] * mdp.transition[s[t], a[t], s[t + 1]].item()
            for t in range(mdp.horizon)
        )
        * r
        for s, a, r in zip(states.tolist(), actions.tolist(), returns.tolist())
    )
    (grad_ref,) = torch.autograd.grad(J_ref, policy.logits)
    assert torch.allclose(J, J_ref, rtol=1e-5) and grad.abs().sum() > 0
    assert torch.allclose(grad, grad_ref, rtol=1e-4, atol=1e-6)


def test_prefix_probabilities_are_marginals():
    mdp = random_mdp(5)
    policy = random_policy(mdp, 5)
    states, actions, _ = enumerate_trajectories(mdp)
    full = log_trajectory_prob(mdp, policy, states, actions).exp()
    prefix = log_trajectory_prob(
        mdp, policy, states[:, :3], actions[:, :2]
    ).exp()  # first two steps
    key = (
        states[:, 0] * 100
        + states[:, 1] * 10
        + states[:, 2]
        + 1000 * (actions[:, 0] * 2 + actions[:, 1])
    )
    for k in key.unique():
        assert torch.isclose(full[key == k].sum(), prefix[key == k][0], rtol=1e-5)


def test_impossible_trajectory_has_probability_zero():
    mdp = random_mdp(0)
    policy = random_policy(mdp, 0)
    states = torch.tensor(
        [[mdp.n_states - 1, 0, 0, 0]]
    )  # the last state has P(s_0) = 0
    log_p = log_trajectory_prob(
        mdp, policy, states, torch.zeros(1, 3, dtype=torch.long)
    )
    assert log_p.item() == -math.inf


def test_differentiable_through_mlp_like_policies():
    mdp = slippery_chain(device="cpu")
    table = torch.zeros(mdp.n_states, mdp.n_actions, requires_grad=True)

    def policy(s):  # any states -> Categorical callable
        return torch.distributions.Categorical(logits=table[s])

    states, actions, returns = enumerate_trajectories(mdp)
    J = (log_trajectory_prob(mdp, policy, states, actions).exp() * returns).sum()
    J.backward()
    assert table.grad is not None and torch.isfinite(table.grad).all()


CHAIN = slippery_chain(device="cpu")
POLICY = TabularPolicy(4, 2, device="cpu")
S5 = torch.zeros(3, 5, dtype=torch.long)
A4 = torch.zeros(3, 4, dtype=torch.long)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5.float(), A4),
            TypeError,
            "integer dtype",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5, A4.bool()),
            TypeError,
            "integer dtype",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5.tolist(), A4),
            TypeError,
            "torch.Tensor",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5[:, :4], A4),
            ValueError,
            r"expected \[N, T\+1\]",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5[:2], A4),
            ValueError,
            r"expected \[N, T\+1\]",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5, A4[0]),
            ValueError,
            r"actions has shape \[4\]",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5.to(torch.uint8), A4),
            TypeError,
            "integer dtype",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5, A4.to(torch.complex64)),
            TypeError,
            "integer dtype",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5.to(META), A4),
            ValueError,
            "states is a meta",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5, A4.to(META)),
            ValueError,
            "actions is a meta",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5[0], A4),
            ValueError,
            r"states has shape \[5\]",
        ),
        (lambda: enumerate_trajectories(CHAIN, gamma=math.nan), ValueError, "gamma"),
        (lambda: enumerate_trajectories(CHAIN, gamma=-0.5), ValueError, "gamma"),
        (lambda: enumerate_trajectories(CHAIN, gamma=True), TypeError, "gamma"),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5[:0], A4[:0]),
            ValueError,
            r"N >= 1",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5[:, :1], A4[:, :0]),
            ValueError,
            r"1 <= T <= 4",
        ),
        (
            lambda: log_trajectory_prob(
                CHAIN,
                POLICY,
                torch.zeros(3, 6, dtype=torch.long),
                torch.zeros(3, 5, dtype=torch.long),
            ),
            ValueError,
            r"1 <= T <= 4",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5 + 4, A4),
            ValueError,
            r"states must lie in \[0, 4\)",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5 - 1, A4),
            ValueError,
            r"states must lie in \[0, 4\)",
        ),
        (
            lambda: log_trajectory_prob(CHAIN, POLICY, S5, A4 + 2),
            ValueError,
            r"actions must lie in \[0, 2\)",
        ),
        (
            lambda: log_trajectory_prob(
                CHAIN, TabularPolicy(4, 3, device="cpu"), S5, A4
            ),
            ValueError,
            "3 actions",
        ),
        (lambda: log_trajectory_prob("chain", POLICY, S5, A4), TypeError, "TabularMDP"),
        (lambda: enumerate_trajectories(object()), TypeError, "TabularMDP"),
        (lambda: enumerate_trajectories(CHAIN, gamma=1.5), ValueError, r"\[0, 1\]"),
        (lambda: enumerate_trajectories(CHAIN, gamma="1"), TypeError, "real number"),
    ],
)
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_states_on_another_device():
    mdp = slippery_chain(device="cuda")
    with pytest.raises(ValueError, match="states is on cpu"):
        log_trajectory_prob(mdp, TabularPolicy(4, 2, device="cuda"), S5, A4)
