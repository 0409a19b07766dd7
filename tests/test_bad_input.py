"""The bad-input table of issue 14 for the modules that tests/test_checks.py (checks,
policy, reward), tests/test_envs.py, test_tokens.py and test_probability.py (envs,
trajectory, probability, pretrain) do not cover: losses, objective, engine, tasks,
advantages, plots, generate, checkpoint, distributed, runs, cli and envs.fused.

Each case calls one public function or class with one bad input: a wrong type,
shape, dtype (bool, uint8, int/float, complex), device (a meta tensor), an empty
batch, NaN/inf, or a value out of range. It must raise TypeError or ValueError (or
the documented class: CheckpointError and RunDirError of the run directory,
DistributedError, FloatingPointError for divergence) with a message that names the
argument. A case that does not (yet) is marked xfail(strict=True) with what happens
instead: the list of fixes the notebooks need, and a test that fails once fixed."""

import importlib
import math
import os
from collections import Counter
from dataclasses import replace
from functools import cache
from types import SimpleNamespace

import pytest
import torch

import plainrl.advantages as advantages
import plainrl.checkpoint as checkpoint
import plainrl.cli as cli
import plainrl.distributed as distributed
import plainrl.engine as engine
import plainrl.envs.fused as fused
import plainrl.losses as losses
import plainrl.objective as objective
import plainrl.plots as plots
import plainrl.runs as runs
import plainrl.tasks as tasks
from plainrl.advantages import (
    MovingAverageBaseline,
    Weights,
    batch_mean_baseline,
    group_mean_baseline,
    group_std,
    leave_one_out_baseline,
    reward_to_go,
    weigh,
)
from plainrl.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from plainrl.distributed import (
    DistributedError,
    check_in_sync,
    check_same,
    digest,
    gather,
    gather_objects,
    join,
    launch_env,
    leave,
    lost_peer,
    wrap,
)
from plainrl.engine import (
    Algorithm,
    Budget,
    RunState,
    Trainer,
    defaults,
    minibatches,
    take,
    token_losses,
    train,
    update,
    whole_return,
)
from plainrl.envs.cartpole import CartPole
from plainrl.envs.fused import (
    FusedCartPole,
    compile_kernel,
    counter_uniform,
    fused_rollout,
    fused_step,
    mix32,
    seed_halves,
)
from plainrl.envs.tabular import slippery_chain
from plainrl.envs.tokens import TokenTask
from plainrl.generate import (
    cached_rollout,
    check_sampler,
    generate,
    replay,
    rollout_tokens,
)
from plainrl.losses import reinforce_loss, seq_mean, seq_sum, token_mean
from plainrl.objective import exact_objective, tabular_batch_gradients
from plainrl.plots import plot_learning_curves
from plainrl.policy import MLPPolicy, TabularPolicy, TransformerPolicy
from plainrl.runs import (
    Autocast,
    Checkpoints,
    Compiled,
    Distributed,
    Interrupted,
    RunDirError,
    clipped_loss,
    settings,
    write_learning_curve,
    write_metrics,
)
from plainrl.tasks import Task, TaskConfig, option
from plainrl.trajectory import rollout

# `import plainrl.generate as m` gives the function: the package re-exports
# generate(), which hides its module of the same name
generate_mod = importlib.import_module("plainrl.generate")
NAN, INF = float("nan"), float("inf")
META = torch.device("meta")
U8, C64 = torch.uint8, torch.complex64
B, T = 4, 3
torch.manual_seed(0)
CHAIN = slippery_chain(4, device="cpu")
TAB = TabularPolicy(4, 2, device="cpu")
MLP = MLPPolicy(4, 2, hidden=8, device="cpu")
LM = TransformerPolicy(13, 6, d_model=8, n_head=2, n_layer=1, device="cpu")
TOKENS = TokenTask(4, device="cpu")
ADAM = torch.optim.Adam(TAB.parameters(), lr=0.1)
with torch.random.fork_rng():
    TRAJ = rollout(CHAIN, TAB)  # [4, 4] states of the slippery chain
W = torch.ones(B, 4)  # weights of TRAJ
F = torch.zeros(B, T)  # float [B, T]
M = torch.ones(B, T, dtype=torch.bool)  # a full mask [B, T]
GAP = M.clone()
GAP[0, 1] = False


def nan_at(x, where=(0, 0)):
    x = x.clone()
    x[where] = NAN
    return x


def fake_args(**changes):
    "The parsed arguments of `plainrl train --task tabular --device cpu`."
    argv = ["train", "--task", "tabular", "--device", "cpu"]
    args = cli.parser().parse_args(argv)
    for k, v in changes.items():
        setattr(args, k, v)
    return args


def parser_error(message):
    raise ValueError(message)


@cache
def a_run():
    "A finished run: one update on the slippery chain."
    return train(TaskConfig("tabular", num_envs=8), budget=Budget(1), device="cpu")


def cartpole_trainer(**kwargs):
    "A Trainer on CartPole, set up (env, policy, optimizer), not run."
    trainer = Trainer(TaskConfig("cartpole", num_envs=2, hidden=4), device="cpu")
    trainer.setup()
    return trainer


def ready(hook, trainer):
    hook.ready(trainer)


def the_cli(tmp, *argv):
    "`plainrl train --task tabular` in process; returns the exit status."
    base = ["train", "--task", "tabular", "--device", "cpu", "--no-progress"]
    return cli.main([*base, "--run-dir", str(tmp), *argv])


def _checkpoint_file(tmp, content):
    path = tmp / "ckpt.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    return path


def cli_exit(argv):
    "main(argv) raises SystemExit(2) with the message: as a ValueError for the table."
    try:
        status = cli.main(argv)
    except SystemExit as e:
        raise ValueError(f"exit {e.code}") from None
    return status


# -------------------------------------------------------------- known problems (xfail)
SILENT = "silent: accepted without an error"
WRONG = "a confusing error: "


def xf(reason):
    return pytest.mark.xfail(strict=True, reason=reason)


# (module, public name, label, call(tmp), error, regex for the message, xfail reason)
CASES = [
    # ------------------------------------------------------------------ losses
    ("losses", "reinforce_loss", "log_probs list",
     lambda tmp: reinforce_loss([[0.0]], torch.ones(1, 1)), TypeError, "log_probs",
     None),
    ("losses", "reinforce_loss", "log_probs int",
     lambda tmp: reinforce_loss(torch.zeros(2, 3, dtype=torch.long), F[:2]),
     TypeError, "log_probs", None),
    ("losses", "reinforce_loss", "log_probs bool",
     lambda tmp: reinforce_loss(M, F), TypeError, "log_probs", None),
    ("losses", "reinforce_loss", "log_probs uint8",
     lambda tmp: reinforce_loss(M.to(U8), F), TypeError, "log_probs", None),
    ("losses", "reinforce_loss", "log_probs complex",
     lambda tmp: reinforce_loss(F.to(C64), F), TypeError, "log_probs", None),
    ("losses", "reinforce_loss", "log_probs 1-D",
     lambda tmp: reinforce_loss(F[0], F[0]), ValueError, "log_probs has shape", None),
    ("losses", "reinforce_loss", "log_probs empty",
     lambda tmp: reinforce_loss(F[:0], F[:0]), ValueError, "log_probs has shape", None),
    ("losses", "reinforce_loss", "log_probs meta",
     lambda tmp: reinforce_loss(F.to(META), F.to(META)), ValueError, "log_probs", None),
    ("losses", "reinforce_loss", "weights shape",
     lambda tmp: reinforce_loss(F, F[:, :2]), ValueError, "weights has shape", None),
    ("losses", "reinforce_loss", "weights int",
     lambda tmp: reinforce_loss(F, F.long()), TypeError, "weights", None),
    ("losses", "reinforce_loss", "weights meta",
     lambda tmp: reinforce_loss(F, F.to(META)), ValueError, "weights", None),
    ("losses", "reinforce_loss", "weights NaN",
     lambda tmp: reinforce_loss(F, nan_at(F)), ValueError, "weights", None),
    ("losses", "reinforce_loss", "weights inf",
     lambda tmp: reinforce_loss(F - 1, torch.full((B, T), INF)), ValueError, "weights",
     None),
    ("losses", "seq_sum", "per_token list",
     lambda tmp: seq_sum([[0.0]]), TypeError, "per_token", None),
    ("losses", "seq_sum", "per_token int",
     lambda tmp: seq_sum(F.long()), TypeError, "per_token", None),
    ("losses", "seq_sum", "per_token 3-D",
     lambda tmp: seq_sum(F[None]), ValueError, "per_token has shape", None),
    ("losses", "seq_sum", "per_token meta",
     lambda tmp: seq_sum(F.to(META)), ValueError, "per_token", None),
    ("losses", "seq_sum", "mask uint8",
     lambda tmp: seq_sum(F, M.to(U8)), TypeError, "mask", None),
    ("losses", "seq_sum", "mask gap",
     lambda tmp: seq_sum(F, GAP), ValueError, "mask has a gap", None),
    ("losses", "seq_mean", "per_token empty",
     lambda tmp: seq_mean(F[:0]), ValueError, "per_token has shape", None),
    ("losses", "seq_mean", "mask shape",
     lambda tmp: seq_mean(F, M[:, :2]), ValueError, "mask has shape", None),
    ("losses", "seq_mean", "mask meta",
     lambda tmp: seq_mean(F, M.to(META)), ValueError, "mask", None),
    ("losses", "token_mean", "per_token bool",
     lambda tmp: token_mean(M), TypeError, "per_token", None),
    ("losses", "token_mean", "mask float",
     lambda tmp: token_mean(F, F), TypeError, "mask", None),
    ("losses", "AGGREGATIONS", "per_token complex",
     lambda tmp: losses.AGGREGATIONS["token_mean"](F.to(C64)), TypeError, "per_token",
     None),
    # --------------------------------------------------------------- objective
    ("objective", "exact_objective", "mdp not an MDP",
     lambda tmp: exact_objective("chain", TAB), TypeError, "mdp", None),
    ("objective", "exact_objective", "policy not a policy",
     lambda tmp: exact_objective(CHAIN, "table"), TypeError, "policy", None),
    ("objective", "exact_objective", "policy of other sizes",
     lambda tmp: exact_objective(CHAIN, TabularPolicy(3, 2, device="cpu")),
     ValueError, "policy|states", None),
    ("objective", "exact_objective", "gamma 1.5",
     lambda tmp: exact_objective(CHAIN, TAB, 1.5), ValueError, "gamma", None),
    ("objective", "exact_objective", "gamma NaN",
     lambda tmp: exact_objective(CHAIN, TAB, NAN), ValueError, "gamma", None),
    ("objective", "exact_objective", "gamma complex",
     lambda tmp: exact_objective(CHAIN, TAB, 0.5j), TypeError, "gamma", None),
    ("objective", "tabular_batch_gradients", "n_batches 0",
     lambda tmp: tabular_batch_gradients(TAB, TRAJ, W, 0), ValueError, "n_batches",
     None),
    ("objective", "tabular_batch_gradients", "n_batches float",
     lambda tmp: tabular_batch_gradients(TAB, TRAJ, W, 2.0), TypeError, "n_batches",
     None),
    ("objective", "tabular_batch_gradients", "n_batches not dividing",
     lambda tmp: tabular_batch_gradients(TAB, TRAJ, W, 3), ValueError, "n_batches",
     None),
    ("objective", "tabular_batch_gradients", "weights shape",
     lambda tmp: tabular_batch_gradients(TAB, TRAJ, W[:, :2], 2), ValueError,
     "weights", None),
    ("objective", "tabular_batch_gradients", "weights NaN",
     lambda tmp: tabular_batch_gradients(TAB, TRAJ, nan_at(W), 2), ValueError,
     "weights", None),
    ("objective", "tabular_batch_gradients", "policy an MLP",
     lambda tmp: tabular_batch_gradients(MLP, TRAJ, W, 2), TypeError, "policy", None),
    ("objective", "tabular_batch_gradients", "traj not a Trajectory",
     lambda tmp: tabular_batch_gradients(TAB, "traj", W, 2), TypeError, "traj", None),
    # ------------------------------------------------------------------ engine
    ("engine", "Algorithm", "lr 0",
     lambda tmp: Algorithm(lr=0), ValueError, "lr", None),
    ("engine", "Algorithm", "lr -1",
     lambda tmp: Algorithm(lr=-1), ValueError, "lr", None),
    ("engine", "Algorithm", "lr inf",
     lambda tmp: Algorithm(lr=INF), ValueError, "lr", None),
    ("engine", "Algorithm", "lr 1e400",
     lambda tmp: Algorithm(lr=1e400), ValueError, "lr", None),
    ("engine", "Algorithm", "lr NaN",
     lambda tmp: Algorithm(lr=NAN), ValueError, "lr", None),
    ("engine", "Algorithm", "lr str",
     lambda tmp: Algorithm(lr="0.1"), TypeError, "lr", None),
    ("engine", "Algorithm", "lr bool",
     lambda tmp: Algorithm(lr=True), TypeError, "lr", None),
    ("engine", "Algorithm", "lr tensor",
     lambda tmp: Algorithm(lr=torch.tensor(0.1)), TypeError, "lr", None),
    ("engine", "Algorithm", "aggregate unknown",
     lambda tmp: Algorithm(aggregate="sum"), ValueError, "aggregate", None),
    ("engine", "Algorithm", "aggregate not a str",
     lambda tmp: Algorithm(aggregate=["seq_sum"]), TypeError, "aggregate", None),
    ("engine", "Algorithm", "max_grad_norm -1",
     lambda tmp: Algorithm(max_grad_norm=-1.0), ValueError, "max_grad_norm", None),
    ("engine", "Algorithm", "max_grad_norm 0",
     lambda tmp: Algorithm(max_grad_norm=0.0), ValueError, "max_grad_norm", None),
    ("engine", "Algorithm", "max_grad_norm NaN",
     lambda tmp: Algorithm(max_grad_norm=NAN), ValueError, "max_grad_norm", None),
    ("engine", "Algorithm", "epochs 0",
     lambda tmp: Algorithm(epochs=0), ValueError, "epochs", None),
    ("engine", "Algorithm", "epochs float",
     lambda tmp: Algorithm(epochs=1.5), TypeError, "epochs", None),
    ("engine", "Algorithm", "minibatches 0",
     lambda tmp: Algorithm(minibatches=0), ValueError, "minibatches", None),
    ("engine", "Algorithm", "minibatches bool",
     lambda tmp: Algorithm(minibatches=True), TypeError, "minibatches", None),
    ("engine", "Algorithm", "skip_zero_weights int",
     lambda tmp: Algorithm(skip_zero_weights=1), TypeError, "skip_zero_weights",
     None),
    ("engine", "Budget", "max_updates 0",
     lambda tmp: Budget(max_updates=0), ValueError, "max_updates", None),
    ("engine", "Budget", "max_updates float",
     lambda tmp: Budget(max_updates=10.0), TypeError, "max_updates", None),
    ("engine", "Budget", "max_env_steps -1",
     lambda tmp: Budget(max_env_steps=-1), ValueError, "max_env_steps", None),
    ("engine", "Budget", "window 0",
     lambda tmp: Budget(window=0), ValueError, "window", None),
    ("engine", "Budget", "target NaN",
     lambda tmp: Budget(target=NAN), ValueError, "target", None),
    ("engine", "Budget", "target inf",
     lambda tmp: Budget(target=INF), ValueError, "target", None),
    ("engine", "Budget", "target str",
     lambda tmp: Budget(target="475"), TypeError, "target", None),
    ("engine", "Budget", "stop_when_solved str",
     lambda tmp: Budget(stop_when_solved="no"), TypeError, "stop_when_solved", None),
    ("engine", "whole_return", "traj not a Trajectory",
     lambda tmp: whole_return("traj"), TypeError, "traj", None),
    ("engine", "whole_return", "gamma 1.5",
     lambda tmp: whole_return(TRAJ, 1.5), ValueError, "gamma", None),
    ("engine", "whole_return", "gamma NaN",
     lambda tmp: whole_return(TRAJ, NAN), ValueError, "gamma", None),
    ("engine", "take", "rows out of range",
     lambda tmp: take(TRAJ, torch.tensor([0, 9])), ValueError, "rows", None),
    ("engine", "take", "rows float",
     lambda tmp: take(TRAJ, torch.tensor([0.0, 1.0])), TypeError, "rows", None),
    ("engine", "take", "rows empty",
     lambda tmp: take(TRAJ, torch.tensor([], dtype=torch.long)), ValueError,
     "rows|B >= 1", None),
    ("engine", "take", "traj not a Trajectory",
     lambda tmp: take("traj", slice(0, 2)), TypeError, "traj", None),
    ("engine", "minibatches", "n 0",
     lambda tmp: minibatches(TRAJ, W, 0), ValueError, r"\bn\b|minibatches", None),
    ("engine", "minibatches", "n > B",
     lambda tmp: minibatches(TRAJ, W, 5), ValueError, "minibatches", None),
    ("engine", "minibatches", "n float",
     lambda tmp: minibatches(TRAJ, W, 2.0), TypeError, r"\bn\b|minibatches", None),
    ("engine", "minibatches", "weights shape",
     lambda tmp: minibatches(TRAJ, W[:2], 2), ValueError, "weights", None),
    ("engine", "update", "algo not an Algorithm",
     lambda tmp: update(TAB, ADAM, TRAJ, W, "seq_sum"), TypeError, "algo", None),
    ("engine", "update", "weights shape",
     lambda tmp: update(TAB, ADAM, TRAJ, W[:, :2], Algorithm()), ValueError,
     "weights", None),
    ("engine", "update", "weights int",
     lambda tmp: update(TAB, ADAM, TRAJ, W.long(), Algorithm()), TypeError,
     "weights", None),
    ("engine", "update", "weights NaN",
     lambda tmp: _fresh_update(nan_at(W)),
     ValueError, "weights", None),
    ("engine", "update", "optimizer not an optimizer",
     lambda tmp: update(TAB, "adam", TRAJ, W, Algorithm()), TypeError, "optimizer",
     None),
    ("engine", "update", "traj not a Trajectory",
     lambda tmp: update(TAB, ADAM, "traj", W, Algorithm()), TypeError, "traj", None),
    ("engine", "token_losses", "batch not a Trajectory",
     lambda tmp: token_losses(TAB, reinforce_loss, "traj", W), TypeError, "batch",
     None),
    ("engine", "token_losses", "weights shape",
     lambda tmp: token_losses(TAB, reinforce_loss, TRAJ, W[:, :2]), ValueError,
     "weights", None),
    ("engine", "token_losses", "skip_zero_weights not a bool",
     lambda tmp: token_losses(TAB, reinforce_loss, TRAJ, W, 1), TypeError,
     "skip_zero_weights", None),
    ("engine", "defaults", "unknown task",
     lambda tmp: defaults("atari"), ValueError, "name|task", None),
    ("engine", "defaults", "not a str",
     lambda tmp: defaults(3), TypeError, "name|task", None),
    ("engine", "RunState", "load_state_dict unknown key",
     lambda tmp: RunState().load_state_dict({"updat": 3}), ValueError, "updat", None),
    ("engine", "RunState", "update negative",
     lambda tmp: RunState(update=-1), ValueError, "update", None),
    ("engine", "Trainer", "task a str",
     lambda tmp: Trainer("cartpole"), TypeError, "task", None),
    ("engine", "Trainer", "seed -1",
     lambda tmp: Trainer(TaskConfig(), seed=-1), ValueError, "seed", None),
    ("engine", "Trainer", "seed float",
     lambda tmp: Trainer(TaskConfig(), seed=1.5), TypeError, "seed", None),
    ("engine", "Trainer", "seed 2**64",
     lambda tmp: Trainer(TaskConfig("tabular", num_envs=2), budget=Budget(1),
                         seed=2**64, device="cpu").fit(), ValueError,
     "seed", None),
    ("engine", "Trainer", "device unknown",
     lambda tmp: Trainer(TaskConfig(), device="gpu0"), ValueError, "device", None),
    ("engine", "Trainer", "device meta",
     lambda tmp: Trainer(TaskConfig(), device="meta"), ValueError, "device", None),
    ("engine", "Trainer", "algo not an Algorithm",
     lambda tmp: Trainer(TaskConfig(), algo={"lr": 0.1}), TypeError, "algo", None),
    ("engine", "Trainer", "budget not a Budget",
     lambda tmp: Trainer(TaskConfig(), budget=100), TypeError, "budget", None),
    ("engine", "Trainer", "hooks not iterable",
     lambda tmp: Trainer(TaskConfig(), hooks=5), TypeError, "hooks", None),
    ("engine", "Trainer", "sample not callable",
     lambda tmp: Trainer(TaskConfig(), sample="rollout"), TypeError, "sample", None),
    ("engine", "Trainer", "weigh not callable",
     lambda tmp: Trainer(TaskConfig(), weigh=0.5), TypeError, "weigh", None),
    ("engine", "Trainer", "policy not a module",
     lambda tmp: Trainer(TaskConfig(), policy="mlp"), TypeError, "policy", None),
    ("engine", "train", "task a dict",
     lambda tmp: train({"name": "cartpole"}), TypeError, "task", None),
    ("engine", "train", "unknown option",
     lambda tmp: train(TaskConfig(), seeds=3), TypeError, "seeds", None),
    ("engine", "train", "diverging lr: FloatingPointError",
     lambda tmp: train(TaskConfig("tabular", num_envs=8), algo=Algorithm(lr=1e38),
                       budget=Budget(20), device="cpu"),
     FloatingPointError, "diverged at update", None),
    # ------------------------------------------------------------------- tasks
    ("tasks", "TaskConfig", "name unknown",
     lambda tmp: TaskConfig(name="atari"), ValueError, "name", None),
    ("tasks", "TaskConfig", "name not a str",
     lambda tmp: TaskConfig(name=["cartpole"]), TypeError, "name", None),
    ("tasks", "TaskConfig", "num_envs 0",
     lambda tmp: TaskConfig(num_envs=0), ValueError, "num_envs", None),
    ("tasks", "TaskConfig", "num_envs float",
     lambda tmp: TaskConfig(num_envs=2.0), TypeError, "num_envs", None),
    ("tasks", "TaskConfig", "num_envs bool",
     lambda tmp: TaskConfig(num_envs=True), TypeError, "num_envs", None),
    ("tasks", "TaskConfig", "hidden 0",
     lambda tmp: TaskConfig(hidden=0), ValueError, "hidden", None),
    ("tasks", "TaskConfig", "answer_len 99",
     lambda tmp: TaskConfig(answer_len=99), ValueError, "answer_len", None),
    ("tasks", "TaskConfig", "group_size not dividing",
     lambda tmp: TaskConfig(num_envs=6, group_size=4), ValueError, "group_size", None),
    ("tasks", "TaskConfig", "stop str",
     lambda tmp: TaskConfig(stop="no"), TypeError, "stop", None),
    ("tasks", "TaskConfig", "num_envs absurd",
     lambda tmp: TaskConfig(num_envs=2**62), ValueError, "num_envs", None),
    ("tasks", "option", "help not a str",
     lambda tmp: option(1, None), TypeError, "help", None),
    ("tasks", "Task", "make_env not callable",
     lambda tmp: Task(None, None, "return", "r", 1.0, None), TypeError, "make_env",
     None),
    # -------------------------------------------------------------- advantages
    ("advantages", "reward_to_go", "rewards list",
     lambda tmp: reward_to_go([[1.0]]), TypeError, "rewards", None),
    ("advantages", "reward_to_go", "rewards int",
     lambda tmp: reward_to_go(F.long()), TypeError, "rewards", None),
    ("advantages", "reward_to_go", "rewards bool",
     lambda tmp: reward_to_go(M), TypeError, "rewards", None),
    ("advantages", "reward_to_go", "rewards complex",
     lambda tmp: reward_to_go(F.to(C64)), TypeError, "rewards", None),
    ("advantages", "reward_to_go", "rewards 3-D",
     lambda tmp: reward_to_go(F[None]), ValueError, "rewards", None),
    ("advantages", "reward_to_go", "rewards empty",
     lambda tmp: reward_to_go(F[:0]), ValueError, "rewards", None),
    ("advantages", "reward_to_go", "rewards NaN",
     lambda tmp: reward_to_go(nan_at(F)), ValueError, "rewards", None),
    ("advantages", "reward_to_go", "rewards meta",
     lambda tmp: reward_to_go(F.to(META)), ValueError, "rewards", None),
    ("advantages", "reward_to_go", "overflow",
     lambda tmp: reward_to_go(torch.full((1, 2), 3e38)), ValueError,
     "overflow|finite", None),
    ("advantages", "reward_to_go", "gamma 1.5",
     lambda tmp: reward_to_go(F, 1.5), ValueError, "gamma", None),
    ("advantages", "reward_to_go", "gamma NaN",
     lambda tmp: reward_to_go(F, NAN), ValueError, "gamma", None),
    ("advantages", "reward_to_go", "mask gap",
     lambda tmp: reward_to_go(F, mask=GAP), ValueError, "mask has a gap", None),
    ("advantages", "reward_to_go", "mask uint8",
     lambda tmp: reward_to_go(F, mask=M.to(U8)), TypeError, "mask", None),
    ("advantages", "MovingAverageBaseline", "beta 1",
     lambda tmp: MovingAverageBaseline(1.0), ValueError, "beta", None),
    ("advantages", "MovingAverageBaseline", "beta -0.1",
     lambda tmp: MovingAverageBaseline(-0.1), ValueError, "beta", None),
    ("advantages", "MovingAverageBaseline", "beta NaN",
     lambda tmp: MovingAverageBaseline(NAN), ValueError, "beta", None),
    ("advantages", "MovingAverageBaseline", "beta str",
     lambda tmp: MovingAverageBaseline("0.9"), TypeError, "beta", None),
    ("advantages", "MovingAverageBaseline", "targets NaN",
     lambda tmp: MovingAverageBaseline()(nan_at(F[:, 0], 0)), ValueError, "targets",
     None),
    ("advantages", "MovingAverageBaseline", "targets inf",
     lambda tmp: MovingAverageBaseline()(torch.tensor([INF, 0.0])), ValueError,
     "targets", None),
    ("advantages", "MovingAverageBaseline", "targets int",
     lambda tmp: MovingAverageBaseline()(torch.ones(3, dtype=torch.long)), TypeError,
     "targets", None),
    ("advantages", "MovingAverageBaseline", "targets 3-D",
     lambda tmp: MovingAverageBaseline()(F[None]), ValueError, "targets", None),
    ("advantages", "MovingAverageBaseline", "targets empty",
     lambda tmp: MovingAverageBaseline()(torch.zeros(0)), ValueError, "targets", None),
    ("advantages", "MovingAverageBaseline", "targets meta",
     lambda tmp: MovingAverageBaseline()(torch.zeros(3, device=META)), ValueError,
     "targets", None),
    ("advantages", "MovingAverageBaseline", "mask shape",
     lambda tmp: MovingAverageBaseline()(F, M[:, :2]), ValueError, "mask", None),
    ("advantages", "MovingAverageBaseline", "load_state_dict missing value",
     lambda tmp: MovingAverageBaseline().load_state_dict({"beta": 0.9}), ValueError,
     "value|state", None),
    ("advantages", "MovingAverageBaseline", "load_state_dict beta 5",
     lambda tmp: MovingAverageBaseline().load_state_dict({"beta": 5.0, "value": None}),
     ValueError, "beta", None),
    ("advantages", "MovingAverageBaseline", "load_state_dict NaN value",
     lambda tmp: MovingAverageBaseline().load_state_dict(
         {"beta": 0.9, "value": torch.tensor(NAN)}),
     ValueError, "value", None),
    ("advantages", "batch_mean_baseline", "targets list",
     lambda tmp: batch_mean_baseline([1.0, 2.0]), TypeError, "targets", None),
    ("advantages", "batch_mean_baseline", "targets uint8",
     lambda tmp: batch_mean_baseline(M[:, 0].to(U8)), TypeError, "targets", None),
    ("advantages", "batch_mean_baseline", "targets empty",
     lambda tmp: batch_mean_baseline(F[:0]), ValueError, "targets", None),
    ("advantages", "batch_mean_baseline", "targets NaN",
     lambda tmp: batch_mean_baseline(nan_at(F)), ValueError, "targets", None),
    ("advantages", "batch_mean_baseline", "mask meta",
     lambda tmp: batch_mean_baseline(F, M.to(META)), ValueError, "mask", None),
    ("advantages", "group_mean_baseline", "group_size 0",
     lambda tmp: group_mean_baseline(F, 0), ValueError, "group_size", None),
    ("advantages", "group_mean_baseline", "group_size not dividing",
     lambda tmp: group_mean_baseline(F, 3), ValueError, "group_size", None),
    ("advantages", "group_mean_baseline", "group_size float",
     lambda tmp: group_mean_baseline(F, 2.0), TypeError, "group_size", None),
    ("advantages", "group_mean_baseline", "targets complex",
     lambda tmp: group_mean_baseline(F.to(C64), 2), TypeError, "targets", None),
    ("advantages", "group_mean_baseline", "targets NaN",
     lambda tmp: group_mean_baseline(nan_at(F), 2), ValueError, "targets", None),
    ("advantages", "leave_one_out_baseline", "group_size 1",
     lambda tmp: leave_one_out_baseline(F, 1), ValueError, "group_size", None),
    ("advantages", "leave_one_out_baseline", "targets bool",
     lambda tmp: leave_one_out_baseline(M, 2), TypeError, "targets", None),
    ("advantages", "leave_one_out_baseline", "mask gap",
     lambda tmp: leave_one_out_baseline(F, 2, GAP), ValueError, "mask", None),
    ("advantages", "group_std", "group_size 1",
     lambda tmp: group_std(F, 1), ValueError, "group_size", None),
    ("advantages", "group_std", "targets meta",
     lambda tmp: group_std(F.to(META), 2), ValueError, "targets", None),
    ("advantages", "weigh", "returns unknown",
     lambda tmp: weigh(TRAJ, returns="rtg"), ValueError, "returns", None),
    ("advantages", "weigh", "baseline unknown",
     lambda tmp: weigh(TRAJ, baseline="mean"), ValueError, "baseline", None),
    ("advantages", "weigh", "moving missing",
     lambda tmp: weigh(TRAJ, baseline="moving_average"), TypeError, "moving", None),
    ("advantages", "weigh", "gamma 2",
     lambda tmp: weigh(TRAJ, gamma=2.0), ValueError, "gamma", None),
    ("advantages", "weigh", "leave_one_out of groups of 1",
     lambda tmp: weigh(TRAJ, baseline="leave_one_out"), ValueError, "group_size", None),
    ("advantages", "weigh", "traj not a Trajectory",
     lambda tmp: weigh("traj"), TypeError, "traj", None),
    ("advantages", "Weights", "returns unknown",
     lambda tmp: Weights(returns="rtg"), ValueError, "returns", None),
    ("advantages", "Weights", "baseline unknown",
     lambda tmp: Weights(baseline="group_std"), ValueError, "baseline", None),
    ("advantages", "Weights", "beta 1.5",
     lambda tmp: Weights(beta=1.5), ValueError, "beta", None),
    ("advantages", "Weights", "gamma NaN",
     lambda tmp: Weights(gamma=NAN), ValueError, "gamma", None),
    ("advantages", "Weights", "gamma str",
     lambda tmp: Weights(gamma="1"), TypeError, "gamma", None),
    ("advantages", "Weights", "call on a non-Trajectory",
     lambda tmp: Weights()(F), TypeError, "traj", None),
    ("advantages", "Weights", "load_state_dict not a dict",
     lambda tmp: Weights().load_state_dict([0.9]), TypeError, "state", None),
    # ------------------------------------------------------------------- plots
    ("plots", "plot_learning_curves", "x unknown",
     lambda tmp: plot_learning_curves(None, [a_run()], x="time"), ValueError, r"\bx\b",
     None),
    ("plots", "plot_learning_curves", "runs empty",
     lambda tmp: plot_learning_curves(None, []), ValueError, "runs", None),
    ("plots", "plot_learning_curves", "runs not runs",
     lambda tmp: plot_learning_curves(None, ["run"]), TypeError, "runs", None),
    ("plots", "plot_learning_curves", "ax not axes",
     lambda tmp: plot_learning_curves("ax", [a_run()]), TypeError, r"\bax\b", None),
    # ---------------------------------------------------------------- generate
    ("generate", "generate", "policy an MLP",
     lambda tmp: generate(MLP, torch.zeros(2, 2, dtype=torch.long), 2), TypeError,
     "policy", None),
    ("generate", "generate", "prompts float",
     lambda tmp: generate(LM, torch.zeros(2, 2), 2), TypeError, "prompts", None),
    ("generate", "generate", "prompts bool",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.bool), 2), TypeError,
     "prompts", None),
    ("generate", "generate", "prompts uint8",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=U8), 2), TypeError, "prompts",
     None),
    ("generate", "generate", "prompts 1-D",
     lambda tmp: generate(LM, torch.zeros(2, dtype=torch.long), 2), ValueError,
     "prompts", None),
    ("generate", "generate", "prompts meta",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long, device=META), 2),
     ValueError, "prompts", None),
    ("generate", "generate", "prompts empty",
     lambda tmp: generate(LM, torch.zeros(0, 2, dtype=torch.long), 2), ValueError,
     "prompts", None),
    ("generate", "generate", "prompts id 13 (vocab 13)",
     lambda tmp: generate(LM, torch.full((2, 2), 13), 2), ValueError, "prompts|tokens",
     None),
    ("generate", "generate", "prompts id -1",
     lambda tmp: generate(LM, torch.full((2, 2), -1), 2), ValueError, "prompts|tokens",
     None),
    ("generate", "generate", "prompt + answer longer than block_size",
     lambda tmp: generate(LM, torch.zeros(2, 4, dtype=torch.long), 5), ValueError,
     "n_tokens|block_size|tokens", None),
    ("generate", "generate", "n_tokens 0",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long), 0), ValueError,
     "n_tokens", None),
    ("generate", "generate", "temperature 0",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long), 2, 0.0),
     ValueError, "temperature", None),
    ("generate", "generate", "temperature NaN",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long), 2, NAN),
     ValueError, "temperature", None),
    ("generate", "generate", "temperature 1e-45",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long), 2, 1e-45),
     ValueError, "temperature", None),
    ("generate", "generate", "stop_id 12 (pad)",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long), 2, stop_id=12),
     ValueError, "stop_id", None),
    ("generate", "generate", "stop_id float",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long), 2, stop_id=11.0),
     TypeError, "stop_id", None),
    ("generate", "generate", "greedy 1",
     lambda tmp: generate(LM, torch.zeros(2, 2, dtype=torch.long), 2, greedy=1),
     TypeError, "greedy", None),
    ("generate", "check_sampler", "policy an MLP",
     lambda tmp: check_sampler(MLP), TypeError, "policy", None),
    ("generate", "check_sampler", "policy a module",
     lambda tmp: check_sampler(torch.nn.Linear(2, 2)), TypeError, "policy", None),
    ("generate", "replay", "actions out of the task's range",
     lambda tmp: replay(TOKENS, TOKENS.reset(), torch.full((4, 2), 99),
                        torch.zeros(4, 2), torch.ones(4, 2, dtype=torch.bool)),
     ValueError, "action", None),
    ("generate", "rollout_tokens", "task a CartPole",
     lambda tmp: rollout_tokens(CartPole(2, device="cpu"), LM), TypeError, "task",
     None),
    ("generate", "rollout_tokens", "policy an MLP",
     lambda tmp: rollout_tokens(TOKENS, MLP), TypeError, "policy", None),
    ("generate", "rollout_tokens", "policy with a smaller vocabulary",
     lambda tmp: rollout_tokens(
         TOKENS, TransformerPolicy(5, 6, d_model=8, n_head=2, n_layer=1, device="cpu")),
     ValueError, "policy|prompts|tokens", None),
    ("generate", "cached_rollout", "env not an env",
     lambda tmp: cached_rollout("env", MLP), TypeError, "Env|env", None),
    ("generate", "cached_rollout", "tokens env, transformer of the wrong size",
     lambda tmp: cached_rollout(
         TOKENS, TransformerPolicy(13, 2, 8, 2, 1, device="cpu")),
     ValueError, "block_size", None),
    # -------------------------------------------------------------- checkpoint
    ("checkpoint", "CheckpointError", "is a ValueError",
     lambda tmp: load_checkpoint(tmp / "missing.pt"), ValueError, "no checkpoint",
     None),
    ("checkpoint", "load_checkpoint", "empty file",
     lambda tmp: load_checkpoint(_checkpoint_file(tmp, b"")), CheckpointError,
     "empty", None),
    ("checkpoint", "load_checkpoint", "garbage",
     lambda tmp: load_checkpoint(_checkpoint_file(tmp, b"not a zip" * 10)),
     CheckpointError, "cannot read", None),
    ("checkpoint", "load_checkpoint", "truncated",
     lambda tmp: load_checkpoint(_checkpoint_file(tmp, _truncated())),
     CheckpointError, "cannot read", None),
    ("checkpoint", "load_checkpoint", "an object that is not plain",
     lambda tmp: load_checkpoint(_checkpoint_file(tmp, {"x": SimpleNamespace()})),
     CheckpointError, "refused", None),
    ("checkpoint", "load_checkpoint", "no weights_only=False hint",
     lambda tmp: load_checkpoint(_checkpoint_file(tmp, {"x": SimpleNamespace()})),
     CheckpointError, r"^(?!.*weights_only)", None),
    ("checkpoint", "load_checkpoint", "missing keys",
     lambda tmp: load_checkpoint(_checkpoint_file(tmp, {"a": 1}), ("a", "b")),
     CheckpointError, "lacks b", None),
    ("checkpoint", "load_checkpoint", "not a dict",
     lambda tmp: load_checkpoint(_checkpoint_file(tmp, [1, 2]), ("a",)),
     CheckpointError, "lacks a", None),
    ("checkpoint", "load_checkpoint", "a directory",
     lambda tmp: load_checkpoint(tmp), CheckpointError, "no checkpoint", None),
    ("checkpoint", "load_checkpoint", "path None",
     lambda tmp: load_checkpoint(None), TypeError, "path", None),
    ("checkpoint", "atomic_write", "path None",
     lambda tmp: atomic_write(None).__enter__(), TypeError, "path", None),
    ("checkpoint", "atomic_write", "mode read",
     lambda tmp: atomic_write(tmp / "x", "r").__enter__(), ValueError, "mode", None),
    ("checkpoint", "save_checkpoint", "path in a missing directory",
     lambda tmp: save_checkpoint({}, tmp / "no" / "x.pt"), OSError, "no",
     None),  # FileNotFoundError naming the directory: an OSError, as documented
    ("checkpoint", "save_checkpoint", "checkpoint a lambda",
     lambda tmp: save_checkpoint({"f": lambda: 0}, tmp / "x.pt"), TypeError,
     "checkpoint", None),
    ("checkpoint", "rng_state", "env without a generator",
     lambda tmp: rng_state(SimpleNamespace(device=torch.device("cpu"))), TypeError,
     "env", None),
    ("checkpoint", "set_rng_state", "state missing keys",
     lambda tmp: set_rng_state(CartPole(2, device="cpu"), {}), CheckpointError,
     "state|torch", None),
    ("checkpoint", "set_rng_state", "state of another kind",
     lambda tmp: set_rng_state(CartPole(2, device="cpu"),
                               {"torch": torch.zeros(3), "env": torch.zeros(3)}),
     TypeError, "RNG state", None),
    # ------------------------------------------------------------- distributed
    ("distributed", "launch_env", "a stray RANK",
     lambda tmp: launch_env({"RANK": "0"}), DistributedError, "incomplete", None),
    ("distributed", "launch_env", "RANK not an int",
     lambda tmp: launch_env(dict.fromkeys(distributed.TORCHRUN_VARS, "x")),
     DistributedError, "must be ints", None),
    ("distributed", "launch_env", "RANK >= WORLD_SIZE",
     lambda tmp: launch_env({**dict.fromkeys(distributed.TORCHRUN_VARS, "1"),
                             "RANK": "2"}),
     DistributedError, "RANK < WORLD_SIZE", None),
    ("distributed", "launch_env", "WORLD_SIZE 0",
     lambda tmp: launch_env({**dict.fromkeys(distributed.TORCHRUN_VARS, "0")}),
     DistributedError, "WORLD_SIZE", None),
    ("distributed", "launch_env", "environ not a mapping",
     lambda tmp: launch_env(5), TypeError, "environ", None),
    ("distributed", "DistributedError", "is a RuntimeError",
     lambda tmp: launch_env({"MASTER_PORT": "1"}), RuntimeError, "MASTER_PORT set",
     None),
    ("distributed", "join", "device a str",
     lambda tmp: join("cpu", 0), TypeError, "device", None),
    ("distributed", "join", "timeout_s 0",
     lambda tmp: join(torch.device("cpu"), 0, timeout_s=0), ValueError, "timeout_s",
     None),
    ("distributed", "join", "no torchrun environment",
     lambda tmp: join(torch.device("cpu"), 0), DistributedError, "cannot join", None),
    ("distributed", "wrap", "no process group",
     lambda tmp: wrap(MLP, torch.device("cpu")), ValueError, "process group", None),
    ("distributed", "gather", "tensor a list",
     lambda tmp: gather([1.0, 2.0]), TypeError, "tensor", None),
    ("distributed", "gather_objects", "not picklable, no group",
     lambda tmp: gather_objects(lambda: 0), TypeError, "obj", None),
    ("distributed", "digest", "settings not a dict",
     lambda tmp: digest(3), TypeError, "settings", None),
    ("distributed", "check_same", "settings not a dict",
     lambda tmp: check_same(object()), TypeError, "settings", None),
    ("distributed", "check_in_sync", "module not a module",
     lambda tmp: check_in_sync("mlp"), TypeError, "module", None),
    ("distributed", "lost_peer", "error not an exception",
     lambda tmp: lost_peer("Connection reset by peer"), TypeError, "error", None),
    ("distributed", "leave", "an argument",
     lambda tmp: leave("group"), TypeError, "leave", None),
    # -------------------------------------------------------------------- runs
    ("runs", "Distributed", "timeout_s 0",
     lambda tmp: Distributed(0), ValueError, "timeout_s", None),
    ("runs", "Distributed", "timeout_s float",
     lambda tmp: Distributed(1.5), TypeError, "timeout_s", None),
    ("runs", "Distributed", "timeout_s bool",
     lambda tmp: Distributed(True), TypeError, "timeout_s", None),
    ("runs", "Compiled", "on a tabular env",
     lambda tmp: ready(Compiled(), SimpleNamespace(env=CHAIN)), ValueError,
     "CartPole", None),
    ("runs", "Autocast", "dtype a str",
     lambda tmp: Autocast("bf16"), TypeError, "dtype", None),
    ("runs", "Autocast", "dtype int64",
     lambda tmp: Autocast(torch.long), ValueError, "dtype", None),
    ("runs", "Autocast", "required str",
     lambda tmp: Autocast(required="no"), TypeError, "required", None),
    ("runs", "Autocast", "on an MLP, required",
     lambda tmp: ready(Autocast(), SimpleNamespace(policy=object())), ValueError,
     "compute_dtype", None),
    ("runs", "Checkpoints", "run_dir empty",
     lambda tmp: Checkpoints(""), ValueError, "run_dir", None),
    ("runs", "Checkpoints", "run_dir None",
     lambda tmp: Checkpoints(None), TypeError, "run_dir", None),
    ("runs", "Checkpoints", "run_dir an int",
     lambda tmp: Checkpoints(5), TypeError, "run_dir", None),
    ("runs", "Checkpoints", "every 0",
     lambda tmp: Checkpoints(tmp, 0), ValueError, "every", None),
    ("runs", "Checkpoints", "every float",
     lambda tmp: Checkpoints(tmp, 2.0), TypeError, "every", None),
    ("runs", "Checkpoints", "resume str",
     lambda tmp: Checkpoints(tmp, resume="yes"), TypeError, "resume", None),
    ("runs", "Checkpoints", "overwrite int",
     lambda tmp: Checkpoints(tmp, overwrite=1), TypeError, "overwrite", None),
    ("runs", "Checkpoints", "resume and overwrite",
     lambda tmp: Checkpoints(tmp, resume=True, overwrite=True), ValueError,
     "resume and overwrite", None),
    ("runs", "Checkpoints", "x unknown",
     lambda tmp: Checkpoints(tmp, x="time"), ValueError, r"\bx\b", None),
    ("runs", "Checkpoints", "run_dir a file",
     lambda tmp: _begin(Checkpoints(_a_file(tmp))), RunDirError, "is a file", None),
    ("runs", "Checkpoints", "run_dir holds a run",
     lambda tmp: _begin(Checkpoints(_a_run_dir(tmp))), RunDirError,
     "already holds a run", None),
    ("runs", "Checkpoints", "resume without a checkpoint",
     lambda tmp: Checkpoints(tmp, resume=True).ready(cartpole_trainer()),
     CheckpointError, "no checkpoint", None),
    ("runs", "RunDirError", "a file under run_dir",
     lambda tmp: _begin(Checkpoints(_a_file(tmp) / "sub")), RunDirError, "sub|file",
     None),
    ("runs", "Interrupted", "signum not a signal",
     lambda tmp: Interrupted("SIGINT", "stopped"), TypeError, "signum", None),
    ("runs", "settings", "trainer not a Trainer",
     lambda tmp: settings("trainer"), TypeError, "trainer", None),
    ("runs", "write_metrics", "rows not dicts",
     lambda tmp: write_metrics([1, 2], tmp / "m.csv"), TypeError, "rows", None),
    ("runs", "write_metrics", "rows empty",
     lambda tmp: write_metrics([], tmp / "m.csv"), ValueError, "rows", None),
    ("runs", "write_learning_curve", "run not a Trainer",
     lambda tmp: write_learning_curve("run", tmp / "c.png"), TypeError, "run", None),
    ("runs", "write_learning_curve", "x unknown",
     lambda tmp: write_learning_curve(a_run(), tmp / "c.png", "time"), ValueError,
     r"\bx\b", None),
    ("runs", "clipped_loss", "clip -1",
     lambda tmp: clipped_loss(F, F, SimpleNamespace(log_probs=F), clip=-1.0),
     ValueError, "clip", None),
    ("runs", "clipped_loss", "clip NaN",
     lambda tmp: clipped_loss(F, F, SimpleNamespace(log_probs=F), clip=NAN),
     ValueError, "clip", None),
    ("runs", "clipped_loss", "weights shape",
     lambda tmp: clipped_loss(F, F[:, :1], SimpleNamespace(log_probs=F)), ValueError,
     "weights", None),
    ("runs", "clipped_loss", "log_probs int",
     lambda tmp: clipped_loss(F.long(), F, SimpleNamespace(log_probs=F)), TypeError,
     "log_probs", None),
    ("runs", "clipped_loss", "batch without log_probs",
     lambda tmp: clipped_loss(F, F, None), TypeError, "batch", None),
    ("runs", "clipped_loss", "log_probs meta",
     lambda tmp: clipped_loss(F.to(META), F, SimpleNamespace(log_probs=F)), ValueError,
     "log_probs", None),
    # --------------------------------------------------------------------- cli
    ("cli", "Config", "task a str",
     lambda tmp: cli.Config(task="cartpole"), TypeError, "task", None),
    ("cli", "Config", "seed -1",
     lambda tmp: cli.Config(seed=-1), ValueError, "seed", None),
    ("cli", "Config", "device unknown",
     lambda tmp: cli.Config(device="gpu0"), ValueError, "device", None),
    ("cli", "config", "unknown task",
     lambda tmp: cli.config("atari"), ValueError, "name|task", None),
    ("cli", "config", "unknown setting",
     lambda tmp: cli.config("cartpole", learning_rate=0.1), TypeError,
     "learning_rate", None),
    ("cli", "config", "lr -1",
     lambda tmp: cli.config("cartpole", lr=-1.0), ValueError, "lr", None),
    ("cli", "config", "num_envs 0",
     lambda tmp: cli.config("cartpole", num_envs=0), ValueError, "num_envs", None),
    ("cli", "config", "seed -1",
     lambda tmp: cli.config("cartpole", seed=-1), ValueError, "seed", None),
    ("cli", "config", "device meta",
     lambda tmp: cli.config("cartpole", device="meta"), ValueError, "device", None),
    ("cli", "parser", "unknown flag",
     lambda tmp: _parse(["train", "--task", "cartpole", "--learning-rate", "1"]),
     ValueError, "unrecognized arguments: --learning-rate", None),
    ("cli", "settings_from", "args None",
     lambda tmp: cli.settings_from(None, parser_error), TypeError, "args", None),
    ("cli", "settings_from", "lr inf",
     lambda tmp: cli.settings_from(fake_args(lr=INF), parser_error), ValueError,
     "--lr", None),
    ("cli", "hooks_for", "cfg not a Config",
     lambda tmp: cli.hooks_for(None, fake_args()), TypeError, "cfg", None),
    ("cli", "hooks_for", "resume and overwrite",
     lambda tmp: cli.hooks_for(cli.config("tabular"),
                               fake_args(resume=True, overwrite=True)),
     ValueError, "resume and overwrite", None),
    ("cli", "report", "run not a Trainer",
     lambda tmp: cli.report(None, tmp, print), TypeError, "run", None),
    ("cli", "hf_policy", "model not a str",
     lambda tmp: cli.hf_policy(None, TOKENS), TypeError, "model", None),
    ("cli", "hf_policy", "model empty",
     lambda tmp: cli.hf_policy("", TOKENS), TypeError, "model", None),
    ("cli", "hf_policy", "env that is no token task",
     lambda tmp: cli.hf_policy("gpt2", CHAIN), ValueError, "token task", None),
    ("cli", "load_policy", "run_dir without a checkpoint",
     lambda tmp: cli.load_policy(tmp / "none"), CheckpointError, "no checkpoint",
     None),
    ("cli", "load_policy", "run_dir with a corrupt checkpoint",
     lambda tmp: cli.load_policy(_corrupt_run_dir(tmp)), CheckpointError,
     "checkpoint", None),
    ("cli", "answer", "args not a Namespace",
     lambda tmp: cli.answer(["sample"]), TypeError, "args", None),
    ("cli", "main", "no command",
     lambda tmp: cli_exit([]), ValueError, "exit 2", None),
    ("cli", "main", "argv a str",
     lambda tmp: cli.main("train --task cartpole"), TypeError, "argv", None),
    ("cli", "main", "--num-envs 0",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--num-envs", "0"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--window 0",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--window", "0"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--beta 1",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--beta", "1"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--gamma 2",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--gamma", "2"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--lr nan",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--lr", "nan"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--lr 1e400",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--lr", "1e400"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--epochs 0",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--epochs", "0"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--minibatches 0",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--minibatches", "0"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--minibatches more than num_envs",
     lambda tmp: _status(the_cli(tmp / "mb", "--num-envs", "4", "--minibatches", "8")),
     ValueError, "status 2", None),  # found at the first update, but exit 2
    ("cli", "main", "--max-updates -1",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--max-updates", "-1"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--checkpoint-every 0",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--checkpoint-every", "0"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--target nan",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--target", "nan"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--target inf",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--target", "inf"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--plot-x time",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--plot-x", "time"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--amp maybe",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--amp", "maybe"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--threads 0",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--threads", "0"]),
     ValueError, "exit 2", None),
    ("cli", "main", "--resume --overwrite",
     lambda tmp: cli_exit(["train", "--task", "tabular", "--resume", "--overwrite",
                           "--run-dir", str(tmp)]),
     ValueError, "exit 2", None),
    ("cli", "main", "--compile on tabular",
     lambda tmp: _status(the_cli(tmp / "c", "--compile")), ValueError, "status 2",
     None),
    ("cli", "main", "--amp on for an MLP",
     lambda tmp: _status(cli.main(["train", "--task", "cartpole", "--device", "cpu",
                                   "--amp", "on", "--no-progress",
                                   "--run-dir", str(tmp / "amp")])),
     ValueError, "status 2", None),
    ("cli", "main", "--run-dir a file",
     lambda tmp: _status(the_cli(_a_file(tmp))), ValueError, "status 5", None),
    ("cli", "main", "--run-dir holds a run",
     lambda tmp: _status(the_cli(_a_run_dir(tmp))), ValueError, "status 5", None),
    ("cli", "main", "--resume of a corrupt checkpoint",
     lambda tmp: _status(the_cli(_corrupt_run_dir(tmp), "--resume")), ValueError,
     "status 4", None),
    ("cli", "main", "--resume of a missing checkpoint",
     lambda tmp: _status(the_cli(tmp / "empty", "--resume")), ValueError, "status 4",
     None),
    ("cli", "main", "stray RANK",
     lambda tmp: _status(_with_env({"RANK": "1"}, lambda: the_cli(tmp / "r"))),
     ValueError, "status 6", None),
    # -------------------------------------------------------------- envs.fused
    ("envs.fused", "mix32", "x float",
     lambda tmp: mix32(torch.zeros(3)), TypeError, r"\bx\b",
     None),
    ("envs.fused", "mix32", "x negative",
     lambda tmp: mix32(torch.tensor([-1])), ValueError, r"\bx\b", None),
    ("envs.fused", "seed_halves", "seed float",
     lambda tmp: seed_halves(1.5), TypeError, "seed", None),
    ("envs.fused", "seed_halves", "seed negative",
     lambda tmp: seed_halves(-1), ValueError, "seed", None),
    ("envs.fused", "seed_halves", "seed 2**64",
     lambda tmp: seed_halves(2**64), ValueError, "seed", None),
    ("envs.fused", "counter_uniform", "counter float",
     lambda tmp: counter_uniform(torch.zeros(3), 0), TypeError, "counter",
     None),
    ("envs.fused", "counter_uniform", "counter negative",
     lambda tmp: counter_uniform(torch.tensor([-5]), 0), ValueError, "counter", None),
    ("envs.fused", "fused_rollout", "x of the wrong shape",
     lambda tmp: fused_rollout(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(2),
                               torch.ones(2), torch.zeros(1, 2, dtype=torch.long),
                               torch.tensor([0, 0]), torch.tensor(0)),
     ValueError, r"\bx\b", None),
    ("envs.fused", "compile_kernel", "fn not callable",
     lambda tmp: compile_kernel("step", torch.zeros(2)), TypeError, r"\bfn\b", None),
    ("envs.fused", "fused_step", "x of the wrong shape",
     lambda tmp: fused_step(torch.zeros(3, 2, dtype=torch.float64), torch.zeros(2),
                            torch.ones(2), torch.zeros(2, dtype=torch.long),
                            torch.tensor([0, 0]), torch.tensor(0)),
     ValueError, r"\bx\b", None),
    ("envs.fused", "FusedCartPole", "num_envs 0",
     lambda tmp: FusedCartPole(0, device="cpu", compile=False), ValueError,
     "num_envs", None),
    ("envs.fused", "FusedCartPole", "num_envs float",
     lambda tmp: FusedCartPole(2.0, device="cpu", compile=False), TypeError,
     "num_envs", None),
    ("envs.fused", "FusedCartPole", "seed -1",
     lambda tmp: FusedCartPole(2, device="cpu", seed=-1, compile=False), ValueError,
     "seed", None),
    ("envs.fused", "FusedCartPole", "seed 2**64",
     lambda tmp: FusedCartPole(2, device="cpu", seed=2**64, compile=False),
     ValueError, "seed", None),
    ("envs.fused", "FusedCartPole", "seed float",
     lambda tmp: FusedCartPole(2, device="cpu", seed=1.5, compile=False), TypeError,
     "seed", None),
    ("envs.fused", "FusedCartPole", "compile str",
     lambda tmp: FusedCartPole(2, device="cpu", compile="no"), TypeError, "compile",
     None),
    ("envs.fused", "FusedCartPole", "autoreset int",
     lambda tmp: FusedCartPole(2, device="cpu", compile=False, autoreset=1),
     TypeError, "autoreset", None),
    ("envs.fused", "FusedCartPole", "device unknown",
     lambda tmp: FusedCartPole(2, device="gpu0", compile=False), ValueError, "device",
     None),
    ("envs.fused", "FusedCartPole", "step uint8",
     lambda tmp: _fused().step(torch.ones(2, dtype=U8)), TypeError, "action", None),
    ("envs.fused", "FusedCartPole", "step bool",
     lambda tmp: _fused().step(torch.ones(2, dtype=torch.bool)), TypeError, "action",
     None),
    ("envs.fused", "FusedCartPole", "step float",
     lambda tmp: _fused().step(torch.ones(2)), TypeError, "action", None),
    ("envs.fused", "FusedCartPole", "step complex",
     lambda tmp: _fused().step(torch.ones(2, dtype=C64)), TypeError, "action", None),
    ("envs.fused", "FusedCartPole", "step meta",
     lambda tmp: _fused().step(torch.ones(2, dtype=torch.long, device=META)),
     ValueError, "action", None),
    ("envs.fused", "FusedCartPole", "step shape",
     lambda tmp: _fused().step(torch.ones(3, dtype=torch.long)), ValueError,
     "action has shape", None),
    ("envs.fused", "FusedCartPole", "step empty",
     lambda tmp: _fused().step(torch.ones(0, dtype=torch.long)), ValueError,
     "action has shape", None),
    ("envs.fused", "FusedCartPole", "step out of range",
     lambda tmp: _fused().step(torch.tensor([0, 2])), ValueError, "action must lie",
     None),
    ("envs.fused", "FusedCartPole", "step -1",
     lambda tmp: _fused().step(torch.tensor([-1, 0])), ValueError, "action must lie",
     None),
    ("envs.fused", "FusedCartPole", "t of the wrong shape",
     lambda tmp: setattr(_fused(), "t", torch.zeros(3)), ValueError, "t has shape",
     None),
    ("envs.fused", "FusedCartPole", "done of the wrong shape",
     lambda tmp: setattr(_fused(), "done", torch.zeros(3, dtype=torch.bool)),
     ValueError, "done has shape", None),
    ("envs.fused", "FusedCartPole", "done not bool",
     lambda tmp: setattr(_fused(), "done", torch.zeros(2)), TypeError, "done", None),
    ("envs.fused", "FusedCartPole", "t NaN",
     lambda tmp: setattr(_fused(), "t", torch.tensor([NAN, 0.0])), ValueError, r"\bt\b",
     None),
    ("envs.fused", "FusedCartPole", "rollout float",
     lambda tmp: _fused().rollout(torch.ones(3, 2)), TypeError, "actions", None),
    ("envs.fused", "FusedCartPole", "rollout one row",
     lambda tmp: _fused().rollout(torch.ones(2, dtype=torch.long)), ValueError,
     "actions has shape", None),
    ("envs.fused", "FusedCartPole", "rollout empty",
     lambda tmp: _fused().rollout(torch.ones(0, 2, dtype=torch.long)), ValueError,
     "actions is empty", None),
    ("envs.fused", "FusedCartPole", "rollout out of range",
     lambda tmp: _fused().rollout(torch.tensor([[0, 2]])), ValueError,
     "actions must lie", None),
]  # fmt: skip


def _fresh_update(weights):
    "One update of a new table policy with `weights`; the policy stays finite."
    policy = TabularPolicy(4, 2, device="cpu")
    update(policy, torch.optim.Adam(policy.parameters()), TRAJ, weights, Algorithm())
    if not torch.isfinite(policy.logits).all():
        return "parameters are NaN"  # silent: what the xfail records
    return policy


def _truncated():
    import io

    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(100)}, buffer)
    return buffer.getvalue()[:300]


def _a_file(tmp):
    path = tmp / "a_file"
    path.write_text("x")
    return path


def _a_run_dir(tmp):
    d = tmp / "taken"
    d.mkdir(exist_ok=True)
    (d / "metrics.csv").write_text("update\n1\n")
    return d


def _corrupt_run_dir(tmp):
    d = tmp / "corrupt"
    d.mkdir(exist_ok=True)
    (d / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really")
    return d


def _begin(hook):
    "Run a Checkpoints hook's begin for a rank-0 trainer, then release it."
    trainer = SimpleNamespace(rank=0, world_size=1)
    try:
        hook.begin(trainer)
    finally:
        hook.end(trainer)


def _status(status):
    "An exit status of main, as a ValueError for the table (0 and 1 pass through)."
    if status not in (0, 1):
        raise ValueError(f"status {status}")
    return status


def _with_env(env, call):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return call()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _parse(argv):
    try:
        cli.parser().parse_args(argv)
    except SystemExit:
        raise ValueError("unrecognized arguments: " + " ".join(argv[3:4])) from None


@cache
def _fused_env():
    return FusedCartPole(2, device="cpu", compile=False)


def _fused():
    env = _fused_env()
    env.reset()
    return env


def _param(case):
    module, name, label, call, error, message, reason = case
    marks = () if reason is None else (xf(reason),)
    return pytest.param(call, error, message, id=f"{module}.{name}: {label}",
                        marks=marks)  # fmt: skip


@pytest.fixture(autouse=True)
def _keep_threads():
    "cli.main sets torch's thread count: put it back for the other tests."
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("call, error, message", [_param(c) for c in CASES])
def test_bad_input(call, error, message, tmp_path, capsys):
    with pytest.raises(error, match=message):
        call(tmp_path)


MODULES = {
    "losses": losses,
    "objective": objective,
    "engine": engine,
    "tasks": tasks,
    "advantages": advantages,
    "plots": plots,
    "generate": generate_mod,
    "checkpoint": checkpoint,
    "distributed": distributed,
    "runs": runs,
    "cli": cli,
    "envs.fused": fused,
}
# Public names that are data, not functions or classes: nothing to call with bad input.
DATA = {
    "tasks": {"RTG_BASELINE", "TASKS"},
    "advantages": {"GRPO_EPS", "RETURNS", "BASELINES", "VARIANTS"},
    "plots": {"AXES"},
    "distributed": {"TORCHRUN_VARS"},
    "runs": {"FILES", "KEYS"},
    "cli": {"PARTS", "FLAG", "EXIT", "EPILOG"},
    "envs.fused": {"MASK32", "ROLLOUT_OPTIONS"},
}


def test_every_public_function_and_class_has_a_bad_input_case():
    covered = {(c[0], c[1]) for c in CASES}
    for key, module in MODULES.items():
        data = DATA.get(key, set())
        for name in module.__all__:
            obj = getattr(module, name)
            if name in data:
                assert not callable(obj) or isinstance(obj, dict), name
                continue
            assert (key, name) in covered, f"no bad-input case for {key}.{name}"
    for module, name, *_ in CASES:
        assert name in MODULES[module].__all__, f"{module}.{name} is not public"


def test_the_counts():
    "The numbers of the closing note (issue 14); printed with -s."
    confusing = sum(1 for c in CASES if c[6] and c[6].startswith(WRONG))
    silent = sum(1 for c in CASES if c[6] and c[6].startswith(SILENT))
    clear = len(CASES) - confusing - silent
    print(
        f"\n{len(CASES)} cases: {clear} clear, {confusing} confusing, {silent} silent"
    )
    left = Counter(c[0] for c in CASES if c[6])
    print("still xfail, by module:", dict(left) or "none")
    assert confusing + silent == sum(1 for c in CASES if c[6])


def test_a_nan_baseline_does_not_poison_the_next_batches():
    "Issue 14 item 6: the moving average refuses a NaN batch and keeps its value."
    b = MovingAverageBaseline(0.5)
    b(torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError, match="targets"):
        b(torch.tensor([NAN, 2.0]))
    assert b.value.item() == 1.0  # unchanged by the refused batch
    assert torch.isfinite(b(torch.tensor([0.0, 0.0])))


def test_the_cases_leave_the_shared_objects_alone():
    "The table's shared objects are not changed by the cases."
    assert replace(Algorithm()) == Algorithm()
    assert TRAJ.actions.shape == (B, 4) and torch.isfinite(TAB.logits).all()
    assert not math.isnan(W.sum().item())
