"""plainrl.engine and plainrl.tasks (chapter 6): the update follows eq. 12, the loop
trains every task, its stages and hooks can be swapped, and bad settings fail early."""

import copy
import math
from dataclasses import replace
from functools import partial

import pytest
import torch
import torch.nn.functional as F

import plainrl.verifier
from plainrl.engine import (
    Algorithm,
    Budget,
    RunState,
    Trainer,
    defaults,
    take,
    train,
    update,
    whole_return,
)
from plainrl.envs.tabular import optimal_value, slippery_chain
from plainrl.lm import pretrain
from plainrl.losses import reinforce_loss, seq_sum
from plainrl.objective import exact_objective
from plainrl.policy import MLPPolicy, TabularPolicy, TransformerPolicy
from plainrl.tasks import TASKS, TaskConfig
from plainrl.trajectory import rollout


def chain_and_policy(num_envs=16, seed=0):
    torch.manual_seed(seed)
    chain = slippery_chain(num_envs=num_envs, device="cpu", seed=seed)
    policy = TabularPolicy(chain.n_states, chain.n_actions, device="cpu")
    with torch.no_grad():
        policy.logits.copy_(torch.randn(chain.n_states, chain.n_actions))
    return chain, policy


def sgd_step(policy, traj, alpha, algo=None):
    "A copy of `policy` after one step of eq. 12 with SGD on `traj`, and the loss."
    policy = copy.deepcopy(policy)
    sgd = torch.optim.SGD(policy.parameters(), lr=alpha)
    loss, norm = update(policy, sgd, traj, whole_return(traj), algo or Algorithm())
    return policy, loss


def without_time(run):
    return [{k: v for k, v in row.items() if k != "wall_s"} for row in run.state.rows]


def test_step_is_alpha_times_the_estimate_of_eq_12():
    chain, policy = chain_and_policy()
    traj = rollout(chain, policy)
    weights = whole_return(traj)
    # eq. 12 by hand for a softmax table: ∇_{θ_s} log π(a|s) = onehot(a) - π(·|s)
    score = F.one_hot(traj.actions, 2) - policy(traj.obs).probs.detach()
    terms = (score * weights[..., None]).flatten(0, 1)
    g_hat = torch.zeros(4, 2).index_put_((traj.obs.flatten(),), terms, accumulate=True)
    g_hat /= chain.num_envs
    stepped, loss = sgd_step(policy, traj, alpha=0.1)
    assert torch.allclose(stepped.logits - policy.logits, 0.1 * g_hat, atol=1e-6)
    assert loss.dim() == 0 and not loss.requires_grad


def test_whole_return_is_R_of_tau_on_every_real_step():
    chain, policy = chain_and_policy()
    traj = rollout(chain, policy)
    w = whole_return(traj)
    R = traj.rewards.sum(1)
    assert torch.equal(w, torch.where(traj.mask, R[:, None], 0.0))


def test_update_raises_J_in_expectation():
    chain, policy = chain_and_policy()
    J0 = exact_objective(chain, policy)
    (exact_grad,) = torch.autograd.grad(J0, policy.logits)
    # the average of many estimates is the estimate from their union
    many = rollout(slippery_chain(num_envs=2**15, device="cpu", seed=1), policy)
    big, _ = sgd_step(policy, many, alpha=1.0)
    g = (big.logits - policy.logits).detach()
    assert F.cosine_similarity(g.flatten(), exact_grad.flatten(), dim=0) > 0.99
    gains = []
    for seed in range(100):  # single small-batch steps: noisy, uphill on average
        few = rollout(slippery_chain(num_envs=8, device="cpu", seed=seed), policy)
        stepped, _ = sgd_step(policy, few, alpha=0.05)
        gains.append((exact_objective(chain, stepped) - J0).item())
    gains = torch.tensor(gains)
    assert gains.mean() > 3 * gains.std() / len(gains) ** 0.5


def test_clipping_bounds_the_step():
    chain, policy = chain_and_policy(num_envs=64)
    traj = rollout(chain, policy)
    free, _ = sgd_step(policy, traj, alpha=1.0)
    free_norm = (free.logits - policy.logits).norm()
    clipped, _ = sgd_step(policy, traj, 1.0, Algorithm(max_grad_norm=0.1))
    step = (clipped.logits - policy.logits).norm().item()
    assert free_norm > 0.5 and step == pytest.approx(0.1, rel=1e-4)
    # in the direction of the unclipped step
    cosine = F.cosine_similarity(
        (clipped.logits - policy.logits).flatten(),
        (free.logits - policy.logits).flatten(),
        dim=0,
    )
    assert cosine > 0.9999


def test_update_reports_the_gradient_norm_before_clipping():
    chain, policy = chain_and_policy(num_envs=64)
    traj = rollout(chain, policy)
    sgd = torch.optim.SGD(policy.parameters(), lr=0.0)
    _, norm = update(
        policy, sgd, traj, whole_return(traj), Algorithm(max_grad_norm=0.1)
    )
    loss = seq_sum(
        reinforce_loss(policy(traj.obs).log_prob(traj.actions), whole_return(traj)),
        traj.mask,
    )
    (grad,) = torch.autograd.grad(loss, policy.logits)
    assert norm == pytest.approx(grad.norm().item(), rel=1e-5)


class RowCounter(torch.nn.Module):
    "A policy that records how many rows each forward pass reads."

    def __init__(self, policy):
        super().__init__()
        self.policy, self.rows = policy, []

    def forward(self, obs):
        self.rows.append(obs.shape[0])
        return self.policy(obs)


@pytest.mark.parametrize("aggregate", ["seq_sum", "seq_mean", "token_mean"])
def test_skipping_zero_weight_rows_takes_the_same_step_reading_fewer_rows(aggregate):
    chain, policy = chain_and_policy(num_envs=64)
    traj = rollout(chain, policy)
    weights = whole_return(traj)
    live = int(weights.ne(0).any(1).sum())
    assert 0 < live < 64  # some returns are 0: their rows have weight 0
    steps = {}
    for skip in (False, True):
        model = RowCounter(copy.deepcopy(policy))
        adam = torch.optim.Adam(model.parameters(), lr=0.1)
        algo = Algorithm(aggregate=aggregate, skip_zero_weights=skip)
        loss, norm = update(model, adam, traj, weights, algo)
        steps[skip] = (model.policy.logits.detach(), loss, norm, model.rows)
    (a, loss_a, norm_a, rows_a), (b, loss_b, norm_b, rows_b) = steps.values()
    assert rows_a == [64] and rows_b == [live]
    assert torch.allclose(a, b, atol=1e-6) and not torch.equal(a, policy.logits)
    assert loss_b == pytest.approx(loss_a.item(), rel=1e-5)
    assert norm_b == pytest.approx(norm_a.item(), rel=1e-5)


def test_a_batch_of_zero_weights_reads_one_row_and_does_not_move():
    chain, policy = chain_and_policy(num_envs=16)
    traj = rollout(chain, policy)
    model = RowCounter(copy.deepcopy(policy))
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    zeros = torch.zeros(traj.mask.shape)
    loss, norm = update(model, adam, traj, zeros, Algorithm(skip_zero_weights=True))
    assert model.rows == [1] and loss == 0 and norm == 0
    assert torch.equal(model.policy.logits, policy.logits)


def test_epochs_and_minibatches_take_that_many_steps():
    chain, policy = chain_and_policy(num_envs=16)
    traj = rollout(chain, policy)
    steps = []
    sgd = torch.optim.SGD(policy.parameters(), lr=0.1)
    sgd.register_step_post_hook(lambda *args: steps.append(1))
    update(policy, sgd, traj, whole_return(traj), Algorithm(epochs=3, minibatches=4))
    assert len(steps) == 12
    with pytest.raises(ValueError, match="minibatches"):
        update(policy, sgd, traj, whole_return(traj), Algorithm(minibatches=17))


def test_one_minibatch_per_pass_is_the_whole_batch():
    chain, policy = chain_and_policy(num_envs=16)
    traj = rollout(chain, policy)
    one, _ = sgd_step(policy, traj, 0.1)
    parts = torch.arange(16).chunk(2)
    a, _ = sgd_step(policy, take(traj, parts[0]), 0.1)
    assert not torch.allclose(
        one.logits, a.logits
    )  # half the batch is another estimate


def test_training_reaches_the_optimum():
    task, algo, budget = defaults("tabular")
    run = train(task, None, algo, budget, seed=1, device="cpu")
    chain = slippery_chain(device="cpu")
    J = exact_objective(chain, run.policy).item()
    assert run.state.solved_at == len(run.state.rows) < budget.max_updates
    assert abs(J - optimal_value(chain).item()) <= 0.01
    assert run.state.rows[-1]["objective"] == pytest.approx(J, abs=1e-5)
    columns = [
        "update",
        "env_steps",
        "wall_s",
        "return",
        "loss",
        "grad_norm",
        "objective",
    ]
    assert list(run.state.rows[-1]) == columns


def test_training_is_deterministic_by_seed():
    task, algo, budget = defaults("tabular")
    budget = replace(budget, max_updates=20, stop_when_solved=False)
    first, again, other = (
        train(task, None, algo, budget, seed=s, device="cpu") for s in (0, 0, 1)
    )
    assert without_time(first) == without_time(again)
    assert torch.equal(first.policy.logits, again.policy.logits)
    assert without_time(first) != without_time(other)


def test_budget_stops_training():
    task, algo, budget = defaults("tabular")
    budget = replace(budget, max_env_steps=3 * 64 * 4)
    run = train(task, None, algo, budget, seed=0, device="cpu")
    rows = run.state.rows
    assert len(rows) == 3 and run.state.solved_at is None
    assert rows[-1]["env_steps"] == 3 * 64 * 4


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_trains_through_the_one_loop(name, monkeypatch):
    # the addition task's default policy is chapter 8's base model: a small one here
    small = partial(pretrain, steps=3, batch_size=8, d_model=16, n_layer=1)
    monkeypatch.setattr(plainrl.verifier, "pretrain", small)
    task, algo, budget = defaults(name)
    task = replace(task, num_envs=8)
    budget = replace(budget, max_updates=2)
    run = train(task, None, algo, budget, seed=0, device="cpu")
    assert len(run.state.rows) == 2 and run.score == TASKS[name].score
    assert run.score in run.state.rows[-1]


def test_stages_can_be_swapped():
    task, algo, budget = defaults("tabular")
    budget = replace(budget, max_updates=3, stop_when_solved=False)
    calls = []

    def weigh(traj):
        calls.append("weigh")
        return torch.zeros_like(traj.rewards)  # no signal: the policy must not move

    def loss(log_probs, weights, batch):
        calls.append("loss")
        return reinforce_loss(log_probs, weights)

    def sample(env, policy):
        calls.append("sample")
        return rollout(env, policy)

    options = dict(sample=sample, weigh=weigh, loss=loss)
    run = train(task, None, algo, budget, seed=0, device="cpu", **options)
    assert calls == ["sample", "weigh", "loss"] * 3
    assert torch.equal(run.policy.logits, torch.zeros(4, 2))


def test_hooks_are_called_in_order_and_end_always_runs():
    events = []

    class Recorder:
        def begin(self, trainer):
            events.append("begin")

        def ready(self, trainer):
            events.append(("ready", trainer.state.update))

        def after_update(self, trainer, row):
            events.append(("after_update", row["update"]))
            if row["update"] == 2:
                raise KeyboardInterrupt

        def end(self, trainer):
            events.append("end")

    task, algo, budget = defaults("tabular")
    with pytest.raises(KeyboardInterrupt):
        Trainer(task, algo=algo, budget=budget, device="cpu", hooks=[Recorder()]).fit()
    expected = ["begin", ("ready", 0), ("after_update", 1), ("after_update", 2), "end"]
    assert events == expected


def test_divergence_stops_the_run_where_it_first_shows():
    task, algo, budget = defaults("cartpole")
    task = replace(task, num_envs=8)

    def nan_loss(log_probs, weights, batch):
        return log_probs * float("nan")

    with pytest.raises(FloatingPointError, match="diverged at update 1"):
        train(task, None, algo, budget, seed=0, device="cpu", loss=nan_loss)

    def nan_weights(traj):  # bad input of the loss, refused before any step
        return torch.full_like(traj.rewards, float("nan"))

    policy = MLPPolicy(4, 2, hidden=task.hidden, device="cpu")
    before = [p.detach().clone() for p in policy.parameters()]
    with pytest.raises(ValueError, match="weights must be finite"):
        train(task, policy, algo, budget, seed=0, device="cpu", weigh=nan_weights)
    assert all(torch.equal(a, b) for a, b in zip(before, policy.parameters()))


def test_run_state_round_trips():
    state = RunState(3, 100, 1.5, [{"update": 1}], [1.0, 2.0], 2)
    again = RunState()
    again.load_state_dict(state.state_dict())
    assert again == state


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: TaskConfig("atari"), ValueError, "name must be one of"),
        (lambda: TaskConfig(num_envs=0), ValueError, "num_envs"),
        (
            lambda: TaskConfig("tokens", num_envs=10, group_size=4),
            ValueError,
            "multiple",
        ),
        (lambda: Algorithm(lr=-1.0), ValueError, "lr"),
        (lambda: Algorithm(lr=math.inf), ValueError, "lr"),
        (lambda: Algorithm(lr=True), TypeError, "lr"),
        (lambda: Algorithm(aggregate="mean"), ValueError, "aggregate"),
        (lambda: Algorithm(max_grad_norm=0.0), ValueError, "max_grad_norm"),
        (lambda: Algorithm(max_grad_norm=-1.0), ValueError, "max_grad_norm"),
        (lambda: Algorithm(epochs=0), ValueError, "epochs"),
        (lambda: Budget(max_updates=0), ValueError, "max_updates"),
        (lambda: Budget(target=float("nan")), ValueError, "target"),
        (lambda: Trainer("tabular"), TypeError, "TaskConfig"),
        (lambda: Trainer(TaskConfig(), seed=-1), ValueError, "seed"),
        (lambda: Trainer(TaskConfig(), device="gpu0"), ValueError, "device"),
    ],
)
def test_bad_settings_fail_early(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_the_engine_never_asks_which_task_it_runs():
    import inspect

    import plainrl.engine

    source = inspect.getsource(plainrl.engine)
    assert "tabular" not in source and "cartpole" not in source
    assert ".name ==" not in source


def test_the_aggregation_setting_reaches_the_update():
    chain, policy = chain_and_policy(num_envs=16)
    traj = rollout(chain, policy)  # every episode lasts T = 4 steps
    steps = {}
    for how in ("seq_sum", "token_mean"):
        stepped, _ = sgd_step(policy, traj, 1.0, Algorithm(aggregate=how))
        steps[how] = stepped.logits - policy.logits
    assert torch.allclose(steps["seq_sum"] / 4, steps["token_mean"], atol=1e-6)


def test_a_huge_step_stops_where_the_logits_first_overflow():
    task, algo, budget = defaults("tokens")
    task = replace(task, num_envs=16)
    algo = replace(algo, lr=1e30)  # finite, accepted, and far too large
    policy = TransformerPolicy(13, 4, d_model=16, n_head=2, n_layer=1, device="cpu")
    with pytest.raises(FloatingPointError, match="diverged at update 2: the policy's"):
        train(task, policy, algo, budget, seed=0, device="cpu")


def test_divergence_on_the_exact_objective_names_its_update():
    task, algo, budget = defaults("tabular")

    def nan_loss(log_probs, weights, batch):
        return log_probs * float("nan")

    with pytest.raises(FloatingPointError, match="diverged at update 1"):
        train(task, None, algo, budget, seed=0, device="cpu", loss=nan_loss)
