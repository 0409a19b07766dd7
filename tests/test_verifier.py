"""Chapter 8: pretraining, sampling the addition task, pass@k, the RL task."""

import json
from itertools import combinations

import pytest
import torch

from plainrl.engine import Trainer
from plainrl.envs.addition import (
    ANSWER_LEN,
    BLOCK_SIZE,
    EOS,
    PAD,
    VOCAB_SIZE,
    AdditionTask,
    encode_prompts,
    verify,
)
from plainrl.envs.tokens import TokenTask
from plainrl.generate import generate, rollout_tokens
from plainrl.lm import WholeAnswers, pretrain
from plainrl.policy import TransformerPolicy
from plainrl.tasks import TASKS, TaskConfig
from plainrl.trajectory import Trajectory
from plainrl.verifier import (
    RL_VARIANTS,
    HeldOut,
    evaluate,
    gradient_estimate,
    pass_at_k,
    sweep,
    train_on_addition,
)


def small_policy(seed=0):
    torch.manual_seed(seed)
    return TransformerPolicy(VOCAB_SIZE, BLOCK_SIZE, 32, 2, 1, device="cpu")


@pytest.fixture(scope="module")
def tiny_base():
    "A briefly pretrained model: writes digits and EOS, rarely the right sum."
    return pretrain(steps=30, batch_size=64, d_model=32, n_layer=1, device="cpu")[0]


def test_pass_at_k_is_the_unbiased_estimator():
    for n, k in [(5, 1), (6, 3), (8, 8)]:
        for c in range(n + 1):
            draws = list(combinations([1] * c + [0] * (n - c), k))
            exact = sum(any(d) for d in draws) / len(draws)
            got = pass_at_k(n, torch.tensor([c]), k).item()
            assert abs(got - exact) < 1e-12
    c = torch.arange(9)
    assert torch.allclose(pass_at_k(8, c, 1), c.double() / 8)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(4, c, 5)
    with pytest.raises(TypeError, match="n must be"):
        pass_at_k(4.0, c, 1)


def test_pretraining_is_reproducible_and_learns():
    first, losses = pretrain(
        steps=40, batch_size=32, d_model=32, n_layer=1, device="cpu"
    )
    again, _ = pretrain(steps=40, batch_size=32, d_model=32, n_layer=1, device="cpu")
    other, _ = pretrain(
        steps=40, batch_size=32, d_model=32, n_layer=1, seed=1, device="cpu"
    )
    for name, value in first.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
    assert not torch.equal(first.head.weight, other.head.weight)
    assert losses.shape == (40,) and losses[-10:].mean() < losses[:5].mean() - 0.5
    state = torch.random.get_rng_state()
    pretrain(steps=2, batch_size=8, d_model=16, n_layer=1, device="cpu")
    assert torch.equal(state, torch.random.get_rng_state())  # global state kept


def sample_answers(policy, prompts, greedy=False):
    return generate(policy, prompts, ANSWER_LEN, stop_id=EOS, greedy=greedy)


def test_generate_stops_at_eos(tiny_base):
    prompts = encode_prompts(torch.arange(64) % 1000, torch.arange(64) * 7 % 1000)
    torch.manual_seed(0)
    tokens, log_probs, mask = sample_answers(tiny_base, prompts)
    assert tokens.shape == log_probs.shape == mask.shape == (64, ANSWER_LEN)
    assert mask[:, 0].all()
    ended = torch.cumsum((tokens == EOS).long(), 1)
    after = torch.cat([torch.zeros(64, 1, dtype=torch.long), ended[:, :-1]], 1) > 0
    assert torch.equal(mask, ~after)  # real up to and with the first EOS
    assert (tokens[~mask] == PAD).all() and (log_probs[~mask] == 0).all()
    assert (log_probs[mask] < 0).all()
    torch.manual_seed(0)
    again = sample_answers(tiny_base, prompts)
    assert all(torch.equal(x, y) for x, y in zip(again, (tokens, log_probs, mask)))
    greedy, greedy_log_probs, _ = sample_answers(tiny_base, prompts, greedy=True)
    state = torch.random.get_rng_state()
    assert torch.equal(greedy, sample_answers(tiny_base, prompts, greedy=True)[0])
    assert torch.equal(state, torch.random.get_rng_state())  # greedy draws nothing
    with torch.no_grad():
        first = tiny_base.logits(prompts)[:, -1]
    assert torch.equal(greedy[:, 0], first.argmax(-1))  # the most likely token
    assert torch.allclose(greedy_log_probs[:, 0], first.log_softmax(-1).max(-1).values)


def test_cached_log_probs_equal_the_full_forward_pass(tiny_base):
    env = AdditionTask(24, device="cpu", seed=3, group_size=4)
    torch.manual_seed(1)
    traj = rollout_tokens(env, tiny_base)
    with torch.no_grad():
        per_step = tiny_base(traj.obs).log_prob(traj.actions)
        one_pass = WholeAnswers(tiny_base, env.prompt_len)(traj.obs).log_prob(
            traj.actions
        )
    m = traj.mask
    assert torch.allclose(per_step[m], one_pass[m], atol=1e-5)
    assert torch.allclose(traj.log_probs[m], one_pass[m], atol=1e-4)


def test_rollout_answers_is_a_trajectory_with_groups_and_rewards(tiny_base):
    env = AdditionTask(32, device="cpu", seed=0, group_size=8)
    torch.manual_seed(0)
    traj = rollout_tokens(env, tiny_base)
    assert isinstance(traj, Trajectory) and traj.group_size == 8
    assert traj.actions.shape[0] == 32 and traj.actions.shape[1] <= ANSWER_LEN
    assert (env.a.view(4, 8) == env.a.view(4, 8)[:, :1]).all()
    R = traj.rewards.sum(1)
    assert torch.equal(R, verify(env.a, env.b, traj.actions))
    last = traj.lengths - 1
    rows = torch.arange(32)
    ended_with_eos = traj.actions[rows, last] == EOS
    assert torch.equal(traj.terminated[rows, last], ended_with_eos)
    assert torch.equal(traj.truncated[rows, last], ~ended_with_eos)
    assert (traj.lengths[~ended_with_eos] == ANSWER_LEN).all()
    # the right answers, forced: every reward is 1
    policy = small_policy()
    with torch.no_grad():
        policy.head.weight.zero_()
        policy.head.bias.fill_(-1e4)
        policy.head.bias[EOS] = 0
    env = AdditionTask(8, device="cpu", seed=0)
    traj = rollout_tokens(env, policy)  # EOS at once: empty answers score 0
    assert traj.actions.shape == (8, 1) and not traj.rewards.any()
    assert traj.terminated.all()


def test_gradient_estimate_is_minus_the_loss_gradient(tiny_base):
    env = AdditionTask(16, device="cpu", seed=0, group_size=4)
    torch.manual_seed(0)
    traj = rollout_tokens(env, tiny_base)
    w = torch.where(traj.mask, torch.ones_like(traj.log_probs), 0)
    g = gradient_estimate(tiny_base, traj, w)
    assert g.shape == (sum(p.numel() for p in tiny_base.parameters()),)
    log_probs = WholeAnswers(tiny_base, env.prompt_len)(traj.obs).log_prob(traj.actions)
    total = torch.where(traj.mask, log_probs, 0).sum(1).mean()
    grads = torch.autograd.grad(total, list(tiny_base.parameters()))
    assert torch.allclose(g, torch.cat([x.flatten() for x in grads]), atol=1e-6)


def test_evaluate_reports_every_bucket(tiny_base):
    a, b = torch.tensor([1, 2, 47, 99]), torch.tensor([2, 3, 385, 1])
    torch.manual_seed(0)
    scores = evaluate(tiny_base, a, b, n=8)
    assert set(scores) == {"all", "no carry", "carry"}
    keys = {"greedy", "pass@1", "pass@8", "length", "entropy", "all equal"}
    for row in scores.values():
        assert set(row) == keys
        assert 0 <= row["pass@1"] <= row["pass@8"] <= 1
        assert 1 <= row["length"] <= ANSWER_LEN and row["entropy"] > 0
        assert 0 <= row["all equal"] <= 1
    with pytest.raises(ValueError, match="n must be"):
        evaluate(tiny_base, a, b, n=4)


def test_the_task_is_registered_and_trains(tiny_base):
    assert "addition" in TASKS
    cfg = TaskConfig("addition", 16, answer_len=ANSWER_LEN, group_size=4, stop=True)
    env = TASKS["addition"].make_env(cfg, 0, "cpu")
    assert isinstance(env, AdditionTask) and env.group_size == 4
    with pytest.raises(ValueError, match="answer_len=5 and stop=True"):
        TASKS["addition"].make_env(TaskConfig("addition", 16), 0, "cpu")
    a, b = torch.tensor([1, 47]), torch.tensor([2, 385])
    run, held = train_on_addition(
        tiny_base, "RLOO", a, b, updates=3, prompts=4, group_size=4, every=3
    )
    assert isinstance(run, Trainer) and run.state.update == 3
    assert [u for u, _ in held.rows] == [0, 3] and isinstance(run.model, WholeAnswers)
    assert run.policy is not tiny_base  # trained on a copy
    assert set(RL_VARIANTS) == {
        "vanilla (eq. 12)",
        "moving average (eq. 15)",
        "RLOO",
        "GRPO without std",
        "GRPO",
    }


def test_bad_input_names_the_argument(tiny_base):
    prompts = encode_prompts(torch.tensor([1]), torch.tensor([2]))
    with pytest.raises(TypeError, match="greedy must be a bool"):
        generate(tiny_base, prompts, ANSWER_LEN, greedy=1)
    with pytest.raises(TypeError, match="policy must be a TransformerPolicy"):
        WholeAnswers(torch.nn.Linear(2, 2), 8)
    with pytest.raises(TypeError, match="prompt_len must be"):
        WholeAnswers(tiny_base, 8.0)
    with pytest.raises(ValueError, match="obs has shape"):
        WholeAnswers(tiny_base, 8)(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="variant must be one of"):
        train_on_addition(tiny_base, "PPO")
    with pytest.raises(TypeError, match="every must be"):
        HeldOut(torch.tensor([1]), torch.tensor([2]), every=1.5)
    with pytest.raises(ValueError, match="steps must be"):
        pretrain(steps=0)
    with pytest.raises(ValueError, match="lr must be"):
        pretrain(lr=-1.0)


def test_one_forward_pass_serves_any_token_task():
    "WholeAnswers needs only the prompt's length: chapter 3's TokenTask too."
    task = TokenTask(32, answer_len=4, device="cpu", seed=0, group_size=4, stop=True)
    torch.manual_seed(0)
    policy = TransformerPolicy(task.vocab_size, task.prompt_len + 4, device="cpu")
    traj = rollout_tokens(task, policy)
    with torch.no_grad():
        per_step = policy(traj.obs).log_prob(traj.actions)
        whole = WholeAnswers(policy, task.prompt_len)(traj.obs)
    m = traj.mask
    assert torch.allclose(per_step[m], whole.log_prob(traj.actions)[m], atol=1e-5)
    with torch.no_grad():
        wrong = WholeAnswers(policy, task.prompt_len - 1)(traj.obs)  # no target
    assert not torch.allclose(per_step[m], wrong.log_prob(traj.actions)[m], atol=1e-3)


def test_sweep_writes_every_variant_and_seed(tiny_base, tmp_path):
    path = tmp_path / "results" / "sweep.json"
    results = sweep(path, seeds=(0, 1), updates=2, every=1, base=tiny_base)
    stored = json.loads(path.read_text())
    assert stored == json.loads(json.dumps(results))  # what it returns, as JSON
    assert stored["settings"]["updates"] == 2
    runs = {(r["variant"], r["seed"]) for r in stored["runs"]}
    assert runs == {(v, s) for v in RL_VARIANTS for s in (0, 1)}
    for r in stored["runs"]:
        assert [u for u, _ in r["curve"]] == [0, 1, 2] and r["wall_s"] > 0
        assert set(r["after"]) == {"all", "no carry", "carry"}
    assert set(stored["before"]["all"]) >= {"greedy", "pass@1", "pass@8"}


def test_pretrain_trains_a_given_policy_in_place():
    "pretrain(policy=...) trains that network (a Hugging Face model, in the bench)."
    torch.manual_seed(0)
    net = small_policy()
    before = net.head.weight.clone()
    trained, losses = pretrain(steps=3, batch_size=8, device="cpu", policy=net)
    assert trained is net and not torch.equal(before, net.head.weight)
    assert losses.shape == (3,)
    with pytest.raises(TypeError, match="policy must be a policy of the addition"):
        pretrain(steps=1, device="cpu", policy=TransformerPolicy(5, 4, device="cpu"))
