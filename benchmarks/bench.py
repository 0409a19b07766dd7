"""The book's benchmarks: plainrl against the field's real peers, measured side by side.

`make bench` installs the peers (the `peers` extra) and runs
`python benchmarks/bench.py --out book/benchmarks.md`, which writes the page and its
figures; `--quick` runs tiny settings (the test suite does), reporting peers that are
not installed as such. This script is not part of the package: with the tests, it is
the only code that imports a peer (Gymnasium, gymnax and JAX, EnvPool, TRL).

Every figure is a ratio to a peer measured in the same run on the same machine, the
two taking turns, so that a slow moment of the machine hits both."""

import argparse
import copy
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from plainrl.advantages import Weights
from plainrl.engine import Algorithm, Budget, Trainer, update
from plainrl.generate import generate, rollout_tokens
from plainrl.lm import OneForwardPass, pretrain
from plainrl.tasks import TaskConfig

ROOT = Path(__file__).resolve().parents[1]
GPU_ROWS = ROOT / "benchmarks" / "gpu_rows.md"  # written by `make gpu-check`
PEERS = {  # import name: what the page calls it
    "gymnasium": "Gymnasium",
    "gymnax": "gymnax",
    "jax": "JAX",
    "envpool": "EnvPool",
    "trl": "TRL",
    "transformers": "Transformers",
}


def installed(name):
    "Whether the peer `name` can be imported here (nothing is imported)."
    return importlib.util.find_spec(name) is not None


def version(name):
    "The installed version of `name`, or 'not installed'."
    if not installed(name):
        return "not installed"
    from importlib.metadata import version as v

    return v(name)


def machine():
    "What the figures were measured on."
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [line for line in f if line.startswith("model name")]
        cpu = lines[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    info = {"CPU": cpu, "cores": os.cpu_count(), "GPU": "none (CPU figures only)"}
    info |= {"Python": platform.python_version(), "torch": torch.__version__}
    return info | {label: version(name) for name, label in PEERS.items()}


def table(header, rows):
    "A Markdown table."
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def rate(call, count, seconds):
    "Items per second of `call()` (`count` items a call) over about `seconds`."
    call()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or calls < 2:
        call()
        calls += 1
    return count * calls / elapsed


def turns(methods, repeats, seconds):
    """Each method of {name: (call, items per call)} in turn, `repeats` times: the
    rates of every turn, {name: [items/s]}."""
    rates = {name: [] for name in methods}
    for _ in range(repeats):
        for name, (call, count) in methods.items():
            rates[name].append(rate(call, count, seconds))
    return rates


def ratio(rates, a, b):
    "The median over turns of rate a / rate b (both measured in each turn)."
    return statistics.median(x / y for x, y in zip(rates[a], rates[b]))


# ------------------------------------------------------------ 1. CartPole throughput
def cartpole_methods(n, K, compile, threads):
    """The steppers of section 1 for n copies, each {name: (call, copy-steps)}: the
    per-step ones (one call = one step of every copy) and the compiled rollouts (one
    call = K steps). Random actions drawn beforehand; finished copies restart."""
    from plainrl.envs.fused import FusedCartPole

    g = torch.Generator().manual_seed(0)
    actions = torch.randint(0, 2, (K, n), generator=g)
    steps = list(actions.unbind(0))
    turn = {"i": 0}

    def next_action():
        turn["i"] = (turn["i"] + 1) % K
        return steps[turn["i"]]

    numpy = actions.numpy()  # the same actions for the NumPy peers
    env = FusedCartPole(n, device="cpu", autoreset=True, compile=compile)
    env.reset()
    methods = {
        "plainrl step": (lambda: env.step(next_action()), n),
        "plainrl rollout": (lambda: env.rollout(actions), n * K),
    }
    if installed("gymnasium"):
        import gymnasium as gym

        vec = gym.make_vec("CartPole-v1", n, vectorization_mode="vector_entry_point")
        vec.reset(seed=0)
        methods["Gymnasium step"] = (lambda: vec.step(numpy[turn["i"]]), n)
    if installed("envpool"):
        import envpool

        pool = envpool.make_gymnasium("CartPole-v1", num_envs=n, num_threads=threads)
        pool.reset()
        methods["EnvPool step"] = (lambda: pool.step(numpy[turn["i"]]), n)
    if installed("gymnax") and installed("jax"):
        methods |= gymnax_methods(n, numpy)
    return methods


def gymnax_methods(n, actions):
    """gymnax's CartPole-v1 under JAX's jit: one step per call, and the K steps of
    `actions` in one jit + lax.scan. Each step splits a fresh key per copy (as
    PureJaxRL does): gymnax restarts a finished copy from that key."""
    import gymnax
    import jax

    env, params = gymnax.make("CartPole-v1")
    key = jax.random.PRNGKey(0)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, n), params)
    vstep = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def one(carry, action):
        key, state = carry
        key, sub = jax.random.split(key)
        obs, state, reward, term, trunc, _ = vstep(
            jax.random.split(sub, n), state, action, params
        )
        return (key, state), (obs, reward, term, trunc)

    step = jax.jit(one)
    scan = jax.jit(lambda carry, xs: jax.lax.scan(one, carry, xs))
    xs = jax.numpy.asarray(actions)
    carry = {"c": (key, state), "i": 0}

    def per_step():
        carry["i"] = (carry["i"] + 1) % len(xs)
        carry["c"], out = step(carry["c"], xs[carry["i"]])
        jax.block_until_ready(out)

    def rollout():
        carry["c"], out = scan(carry["c"], xs)
        jax.block_until_ready(out)

    return {"gymnax step": (per_step, n), "gymnax rollout": (rollout, n * len(xs))}


def throughput_worker(threads, sizes, K, seconds, repeats, compile):
    """Section 1 in this process, on `threads` threads (torch, XLA, EnvPool): a list of
    rows {n, name: median rate, 'ratios': {...}} and the compile times."""
    torch.set_num_threads(threads)
    rows = []
    for n in sizes:
        start = time.perf_counter()
        methods = cartpole_methods(n, K, compile, threads)
        for call, _ in methods.values():  # compile and warm up everything first
            call()
        setup = time.perf_counter() - start
        rates = turns(methods, repeats, seconds)
        row = {"n": n, "setup_s": setup, "rates": {}, "ratios": {}}
        for name, r in rates.items():
            row["rates"][name] = statistics.median(r)
        for mine, peer in COMPARISONS:
            if mine in rates and peer in rates:
                row["ratios"][f"{mine} / {peer}"] = ratio(rates, mine, peer)
        rows.append(row)
    return rows


COMPARISONS = [  # like with like: (plainrl, peer)
    ("plainrl step", "Gymnasium step"),
    ("plainrl step", "EnvPool step"),
    ("plainrl step", "gymnax step"),
    ("plainrl rollout", "gymnax rollout"),
]


def throughput(threads, sizes, K, seconds, repeats, compile):
    """`throughput_worker` in a fresh process (XLA reads its thread count when JAX
    starts): its rows."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if threads == 1:
        env["XLA_FLAGS"] = (
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        )
    args = {"threads": threads, "sizes": sizes, "K": K, "seconds": seconds}
    args |= {"repeats": repeats, "compile": compile}
    command = [sys.executable, __file__, "--worker", json.dumps(args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the throughput worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.splitlines()[-1])


# ------------------------------------------------------------ 2. time to solve CartPole
class TextbookPolicy(nn.Module):
    "The textbook REINFORCE policy: one hidden layer of 32 tanh units."

    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, obs):
        return Categorical(logits=self.net(obs))


@dataclass
class Race:
    "The settings of the race: the textbook's, used by both sides of part (a)."

    episodes: int = 16  # whole episodes per update
    lr: float = 1e-2  # Adam
    max_env_steps: int = 500_000
    window: int = 100  # solved: mean return of the last `window` episodes
    target: float = 475.0


def textbook_reinforce(seed, race):
    """REINFORCE as the textbooks write it: one Gymnasium CartPole-v1, one episode at a
    time, one policy call per action; after `race.episodes` episodes, one Adam step on
    -mean over the batch's steps of log π(a_t|s_t)·R̂_t (reward-to-go). Returns the
    figures of `solve_figures` and the curve [(wall s, env steps, mean return)]."""
    import gymnasium as gym

    torch.manual_seed(seed)
    policy = TextbookPolicy()
    initial = copy.deepcopy(policy.state_dict())
    env = gym.make("CartPole-v1")
    optimizer = torch.optim.Adam(policy.parameters(), lr=race.lr)
    returns, curve, env_steps, start = [], [], 0, time.perf_counter()
    episode_seed = seed * 1_000_003
    while env_steps < race.max_env_steps and not solved_long_enough(curve, race):
        obs_batch, act_batch, weights = [], [], []
        for _ in range(race.episodes):
            obs, _ = env.reset(seed=episode_seed)
            episode_seed += 1
            rewards, done = [], False
            while not done:
                with torch.no_grad():
                    action = policy(torch.as_tensor(obs)).sample().item()
                obs_batch.append(obs)
                act_batch.append(action)
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(reward)
                done = terminated or truncated
            weights += list(np.cumsum(rewards[::-1])[::-1])  # reward-to-go R̂_t
            returns.append(sum(rewards))
        env_steps += len(obs_batch)
        obs_t = torch.as_tensor(np.array(obs_batch))
        log_probs = policy(obs_t).log_prob(torch.as_tensor(act_batch))
        loss = -(log_probs * torch.as_tensor(weights, dtype=torch.float32)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recent = returns[-race.window :]
        curve.append(
            (time.perf_counter() - start, env_steps, sum(recent) / len(recent))
        )
    return solve_figures(curve, race), curve, initial


def solved_long_enough(curve, race):
    """Whether the run solved and then trained on for `race.window` more episodes
    (every update has `race.episodes`)."""
    at = solved_at(curve, race)
    return at is not None and len(curve) >= at + -(-race.window // race.episodes)


def solved_at(curve, race):
    "The index of the first update whose mean return reached the target, or None."
    enough = -(-race.window // race.episodes)  # updates before a mean over `window`
    hits = [i for i, c in enumerate(curve) if i + 1 >= enough and c[2] >= race.target]
    return hits[0] if hits else None


def solve_figures(curve, race):
    """When a run solved (env steps and wall seconds at its first solved update) and
    whether it stayed solved: the mean return of the `window` episodes after."""
    at = solved_at(curve, race)
    if at is None:
        return {"steps": None, "wall": None, "stayed": False}
    wall, steps, _ = curve[at]
    stayed = solved_long_enough(curve, race) and curve[-1][2] >= race.target
    return {"steps": steps, "wall": wall, "stayed": stayed}


def engine_reinforce(seed, race, policy, algo, weigh, episodes):
    """plainrl's engine (`Trainer`) on CartPole, `episodes` copies per update, from
    `policy`: the figures and curve of `textbook_reinforce`."""
    more = -(-race.window // episodes)
    task = TaskConfig("cartpole", num_envs=episodes)
    budget = Budget(
        max_updates=10**6,
        max_env_steps=race.max_env_steps,
        stop_when_solved=False,
        window=race.window,
        target=race.target,
    )

    class StopAfter:
        "Hook: go on `more` updates past the first solved one, then stop."

        def after_update(self, trainer, row):
            at = trainer.state.solved_at
            if at is not None and trainer.state.update >= at + more:
                trainer.budget.max_updates = trainer.state.update

    run = Trainer(task, policy, algo, budget, seed=seed, device="cpu", weigh=weigh,
                  hooks=[StopAfter()])  # fmt: skip
    run.fit()
    curve = [(r["wall_s"], r["env_steps"], r["return"]) for r in run.state.rows]
    return solve_figures(curve, race), curve


def time_to_solve(seeds, race):
    """Part (a): the textbook loop and the engine with the textbook's settings (the
    same initial weights); part (b): chapter 7's recipe (16 episodes, two hidden
    layers, reward-to-go and a moving-average baseline β = 0.7). {name: [(figures,
    curve) per seed]}."""
    results = {"textbook loop": [], "engine, textbook settings": [], "recipe": []}
    for seed in seeds:
        figures, curve, initial = textbook_reinforce(seed, race)
        results["textbook loop"].append((figures, curve))
        policy = TextbookPolicy()
        policy.load_state_dict(initial)  # the same θ_0 as the textbook's run
        algo = Algorithm(lr=race.lr, aggregate="token_mean")  # the mean over steps
        weigh = Weights(returns="reward_to_go")
        run = engine_reinforce(seed, race, policy, algo, weigh, race.episodes)
        results["engine, textbook settings"].append(run)
        weigh = Weights(returns="reward_to_go", baseline="moving_average", beta=0.7)
        run = engine_reinforce(seed, race, None, Algorithm(lr=0.01), weigh, 16)
        results["recipe"].append(run)
    return results


def solve_summary(runs):
    "Seeds solved, medians and ranges of steps and seconds to solve, seeds stayed."
    steps = [f["steps"] for f, _ in runs if f["steps"] is not None]
    wall = [f["wall"] for f, _ in runs if f["wall"] is not None]
    return {
        "solved": len(steps),
        "seeds": len(runs),
        "steps": steps,
        "wall": wall,
        "stayed": sum(f["stayed"] for f, _ in runs),
    }


# ------------------------------------------------------------ 3. language model vs TRL
@dataclass
class LM:
    "The settings both sides share (part 3)."

    group: int = 8  # answers per prompt
    prompts: int = 32  # prompts per update (chapter 8's)
    lr: float = 1e-3  # Adam, constant
    updates: int = 60
    pretrain_steps: int = 1600  # next-token prediction on the corpus, before RL
    width: int = 64
    layers: int = 2


def gpt2(**config):
    """A GPT-2 of `config` built here (no download), without dropout (sampling and
    training see the same π_θ), whose backbone counts positions from each row's first
    real token when it is given none: TRL's loss forward gives none (its fused head
    calls the backbone), and with left padding GPT-2 would count from the padding,
    unlike the sampling (`generate` counts from the mask, as `plainrl.hf` does)."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    class Backbone(GPT2Model):
        def forward(self, input_ids=None, attention_mask=None, position_ids=None,
                    **kwargs):  # fmt: skip
            if position_ids is None and attention_mask is not None:
                positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
                position_ids = positions[:, -input_ids.shape[1] :]
            return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                   position_ids=position_ids, **kwargs)  # fmt: skip

    no_dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(GPT2Config(**config, **no_dropout))
    model.transformer.__class__ = Backbone  # the same weights, this forward
    return model


def addition_gpt2(seed, positions, width, layers):
    """A GPT-2 of `gpt2` with random weights (seeded) and the character tokenizer of
    the addition task (its ids as the task's, then EOS and PAD): (model, tokenizer)."""
    from plainrl.envs.addition import EOS, PAD
    from plainrl.hf import char_tokenizer

    tokenizer = char_tokenizer("0123456789+=")
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id) == (EOS, PAD)
    torch.manual_seed(seed)
    model = gpt2(
        vocab_size=len(tokenizer), n_positions=positions, n_embd=width,
        n_layer=layers, n_head=4, bos_token_id=EOS, eos_token_id=EOS,
        pad_token_id=PAD,
    )  # fmt: skip
    return model, tokenizer


def lm_model(settings, seed):
    """`addition_gpt2` pretrained by next-token prediction on the task's corpus
    (chapter 8), so that RL starts from partial success. Returns (model, tokenizer)."""
    from plainrl.envs.addition import PAD
    from plainrl.hf import HFPolicy

    model, tokenizer = addition_gpt2(seed, 16, settings.width, settings.layers)
    steps = settings.pretrain_steps  # chapter 8's pretraining, of this model
    policy = HFPolicy(model, tokenizer, device="cpu")
    pretrain(steps, seed=seed, device="cpu", policy=policy)
    # plainrl's policy acts on every token but the padding; TRL's samples and scores
    # over the whole vocabulary. The head gives the padding a logit of -1e9 (an
    # untrained bias), so both sides hold the same π_θ.
    bias = torch.zeros(len(tokenizer))
    bias[PAD] = -1e9
    model.lm_head.bias = nn.Parameter(bias, requires_grad=False)
    return model, tokenizer


def plainrl_run(model, tokenizer, settings, seed, device="cpu", skip=True):
    """plainrl's engine (through plainrl.hf) on the addition task, set up as TRL's run
    (`trl_config`): the Trainer, not yet started (on CUDA in bf16). With `skip`, the
    update leaves out the rows of weight 0 (the same step, chapter 8)."""
    import plainrl.verifier  # noqa: F401  (registers the addition task)
    from plainrl.envs.addition import ANSWER_LEN
    from plainrl.hf import HFPolicy
    from plainrl.runs import Autocast

    policy = HFPolicy(model, tokenizer, device=device)
    n = settings.group * settings.prompts
    task = TaskConfig("addition", num_envs=n, answer_len=ANSWER_LEN,
                      group_size=settings.group, stop=True)  # fmt: skip
    algo = Algorithm(lr=settings.lr, aggregate="token_mean", skip_zero_weights=skip)
    budget = Budget(max_updates=settings.updates, stop_when_solved=False, window=n)
    weigh = Weights(baseline="group_mean_std")  # GRPO's advantage
    return Trainer(
        task,
        policy,
        algo,  # token_mean: TRL's bnpo
        budget,
        seed=seed,
        device=device,
        sample=rollout_tokens,  # through the model's own cache
        weigh=weigh,
        hooks=[OneForwardPass()] + ([Autocast()] if device == "cuda" else []),
    )


def plainrl_lm(model, tokenizer, settings, seed, device="cpu", skip=True):
    """`plainrl_run` trained: per update the mean reward and the wall time. Returns the
    curve [(wall s, update, reward)]."""
    run = plainrl_run(model, tokenizer, settings, seed, device, skip).fit()
    # window = n: a row's return is the mean reward of its own batch, as TRL logs it
    return [(r["wall_s"], r["update"], r["return"]) for r in run.state.rows]


def trl_config(settings, seed, workdir):
    """TRL's GRPOConfig with the settings of `plainrl_run`: β = 0, one gradient step
    per batch, token-level mean (bnpo), group-normalised advantages, constant Adam, no
    clipping of the gradient, fp32 (its bf16 defaults to True: autocast on the CPU)."""
    from trl import GRPOConfig

    from plainrl.envs.addition import ANSWER_LEN

    return GRPOConfig(
        output_dir=str(workdir), use_cpu=True, report_to="none", save_strategy="no",
        seed=seed, beta=0.0, num_generations=settings.group,
        per_device_train_batch_size=settings.group * settings.prompts,
        max_completion_length=ANSWER_LEN, max_steps=settings.updates,
        learning_rate=settings.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=0.0,
        loss_type="bnpo", scale_rewards="group", num_iterations=1, bf16=False,
        disable_dropout=True,
        logging_steps=1, disable_tqdm=True, temperature=1.0, top_p=1.0, top_k=0,
        shuffle_dataset=True, dataloader_num_workers=0,
    )  # fmt: skip


def trl_lm(model, tokenizer, settings, seed, workdir):
    """TRL's GRPOTrainer with `trl_config`. Returns the curve [(wall s, update, mean
    reward)]."""
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOTrainer

    from plainrl.envs.addition import ANSWER_LEN, PAD, Prompts, verify

    g = torch.Generator().manual_seed(seed)
    a, b = Prompts("train", "cpu").sample(settings.prompts * settings.updates, g)
    prompts = [f"{x}+{y}=" for x, y in zip(a.tolist(), b.tolist())]

    def reward(prompts, completions, completion_ids, **kwargs):
        "The task's verifier: 1.0 for the digits of a + b, then EOS."
        pairs = [p[:-1].split("+") for p in prompts]
        a = torch.tensor([int(x) for x, _ in pairs])
        b = torch.tensor([int(y) for _, y in pairs])
        answers = torch.full((len(prompts), ANSWER_LEN), PAD)
        for i, ids in enumerate(completion_ids):
            answers[i, : len(ids)] = torch.tensor(ids[:ANSWER_LEN])
        return verify(a, b, answers).tolist()

    curve = []

    class Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                wall = time.perf_counter() - start
                curve.append((wall, state.global_step, logs["reward"]))

    trainer = GRPOTrainer(
        model=model, processing_class=tokenizer, reward_funcs=reward,
        args=trl_config(settings, seed, workdir),
        train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[Log()],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # no log lines on the terminal
    start = time.perf_counter()
    trainer.train()
    return curve


def same_gradient(model, tokenizer, settings, workdir):
    """One batch sampled by plainrl, its gradient by both sides: plainrl's `update`
    (skipping the rows of weight 0) and TRL's GRPO loss (`_compute_loss`, a private
    method: what its trainer differentiates) on the same prompts, answers and
    advantages. Returns the largest relative difference over the parameters' gradients
    and the largest difference of the advantages (TRL's formula against plainrl's)."""
    from datasets import Dataset
    from trl import GRPOTrainer

    from plainrl.envs.addition import PAD

    mine, theirs = copy.deepcopy(model), copy.deepcopy(model)
    run = plainrl_run(mine, tokenizer, settings, seed=0)
    run.setup()
    run.call("ready")  # OneForwardPass
    traj = run.sample(run.env, run.policy)
    weights = run.weigh(traj)
    frozen = torch.optim.SGD(mine.parameters(), lr=0.0)  # the gradient, no step
    update(run.model, frozen, traj, weights, run.algo, run.loss)
    # TRL's batch: prompts left-padded to the longest, answers right-padded after EOS
    prompts = traj.obs[:, 0, -run.env.prompt_len :]
    prompts = prompts[:, (prompts != PAD).any(0)]
    answers = torch.where(traj.mask, traj.actions, PAD)
    R = traj.rewards.sum(1).view(-1, settings.group)  # TRL: (r - mean) / (std + 1e-4)
    advantages = (R - R.mean(1, keepdim=True)) / (R.std(1, keepdim=True) + 1e-4)
    advantages = advantages.flatten()
    n = len(answers)
    trainer = GRPOTrainer(
        model=theirs, processing_class=tokenizer, reward_funcs=lambda **kw: [0.0] * n,
        args=trl_config(replace(settings, updates=1), 0, workdir),
        train_dataset=Dataset.from_dict({"prompt": ["0+0="] * n}),
    )  # fmt: skip
    trainer.current_gradient_accumulation_steps = 1  # set by its training loop
    inputs = dict(
        prompt_ids=prompts, prompt_mask=(prompts != PAD).long(),
        completion_ids=answers, completion_mask=traj.mask.long(),
        advantages=advantages,
    )  # fmt: skip
    theirs.train()
    trainer._compute_loss(theirs, inputs).backward()
    worst = 0.0
    for a, b in zip(mine.parameters(), theirs.parameters()):
        if a.requires_grad:
            size = b.grad.norm().clamp(min=1e-30)  # 0 when no group has signal
            worst = max(worst, ((a.grad - b.grad).norm() / size).item())
    return {
        "gradient": worst,
        "advantages": (advantages - weights[:, 0]).abs().max().item(),
        "skipped": int((weights == 0).all(1).sum()),
        "rows": n,
    }


SIDES = ("plainrl", "plainrl, every row", "TRL")  # every row: no skipping


def lm_race(settings, seeds, workdir):
    """Every side on every seed, from the same pretrained model: {name: [curves]} at
    `settings`, {name: [updates/s]} at 8 prompts per update, and `same_gradient` (TRL
    only when it is installed)."""
    curves = {name: [] for name in SIDES}
    small = {name: [] for name in SIDES}
    model, tokenizer = lm_model(settings, 0)
    sides = {
        "plainrl": lambda m, s, seed: plainrl_lm(m, tokenizer, s, seed),
        "plainrl, every row": lambda m, s, seed: plainrl_lm(
            m, tokenizer, s, seed, skip=False
        ),
    }
    check = None
    if installed("trl"):
        sides["TRL"] = lambda m, s, seed: trl_lm(m, tokenizer, s, seed, workdir)
        check = same_gradient(model, tokenizer, settings, workdir)
        if check["gradient"] > 1e-4:  # then the race would not compare like with like
            raise RuntimeError(f"plainrl's and TRL's gradients differ: {check}")
    fewer = replace(settings, prompts=8, updates=max(2, settings.updates // 3))
    for seed in seeds:
        for name, run in sides.items():
            curves[name].append(run(copy.deepcopy(model), settings, seed))
            curve = run(copy.deepcopy(model), fewer, seed)
            small[name].append(curve[-1][1] / curve[-1][0])
    return curves, small, check


def ratio_table(ratios, rows):
    "A table of the `ratios` (column names) of each row of section 1, by copies."
    cells = [
        [r["n"]]
        + [f"{r['ratios'][k]:.2f}×" if k in r["ratios"] else "–" for k in ratios]
        for r in rows
    ]
    return table(["copies"] + ratios, cells)


def sampling_race(batches, n_tokens, seconds, repeats):
    """Tokens per second of plainrl's sampling (chapter 8's `generate`) and of the
    model's own `generate` (sampling, the model's cache, no early stop), the same
    untrained GPT-2, at each batch size: rows {B, rates, ratio}."""
    from plainrl.hf import HFPolicy

    model, tokenizer = addition_gpt2(seed=0, positions=64, width=64, layers=2)
    model.eval()
    policy = HFPolicy(model, tokenizer, device="cpu")
    rows = []
    for B in batches:
        prompts = policy.encode(["12+345="] * B)
        inputs = tokenizer(["12+345="] * B, return_tensors="pt")

        def theirs():
            with torch.no_grad():
                model.generate(
                    **inputs, do_sample=True, max_new_tokens=n_tokens,
                    min_new_tokens=n_tokens, top_k=0, top_p=1.0,
                    pad_token_id=tokenizer.pad_token_id,
                )  # fmt: skip

        methods = {
            "plainrl": (lambda: generate(policy, prompts, n_tokens), B * n_tokens),
            "generate": (theirs, B * n_tokens),
        }
        rates = turns(methods, repeats, seconds)
        each = [x / y for x, y in zip(rates["plainrl"], rates["generate"])]
        rows.append({"B": B, "rates": {k: statistics.median(v) for k, v in
                                       rates.items()},
                     "ratio": ratio(rates, "plainrl", "generate"),
                     "spread": (min(each), max(each))})  # fmt: skip
    return rows


# ------------------------------------------------------------ the page
def fmt_rate(x):
    "A rate, short: 1.2 M, 35 k, 800."
    if x >= 1e6:
        return f"{x / 1e6:.1f} M"
    return f"{x / 1e3:.0f} k" if x >= 1e4 else f"{x:,.0f}"


def spread(values, spec):
    "The median and range of `values`: 'median (low–high)', or – for none."
    if not values:
        return "–"
    m, lo, hi = statistics.median(values), min(values), max(values)
    return f"{m:{spec}} ({lo:{spec}}–{hi:{spec}})"


def ratio_figure(bars, path):
    """A horizontal bar chart of plainrl's ratios {label: ratio} against a line at 1
    (the peer): PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = list(bars), list(bars.values())
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(bars) + 1.2), dpi=110)
    colors = ["tab:green" if v >= 1 else "tab:red" for v in values]
    ax.barh(range(len(bars)), values, color=colors)
    ax.axvline(1, color="black", lw=1)
    ax.set_xscale("log")
    ax.set_yticks(range(len(bars)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("plainrl's speed / the peer's (log scale; 1 = as fast)")
    for i, v in enumerate(values):
        ax.text(v, i, f" {v:.3g}×", va="center", fontsize=7)
    ax.set_xlim(right=max(values) * 3)  # room for the labels
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves_figure(panels, path):
    """Learning curves against wall time, one panel per {title: (ylabel, {name:
    [curves]})}, each run a thin line: PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7, 3), dpi=110)
    for ax, (title, (ylabel, runs)) in zip(np.atleast_1d(axes), panels.items()):
        for color, (name, curves) in zip(("tab:blue", "tab:orange", "tab:green"),
                                         runs.items()):  # fmt: skip
            for i, curve in enumerate(curves):
                wall = [c[0] for c in curve]
                ax.plot(wall, [c[-1] for c in curve], color=color, lw=0.8,
                        label=name if i == 0 else None)  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("wall time (s)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def figure(path, alt, caption):
    "A MyST figure of the PNG `path` (beside the page) with its alt text and caption."
    return f":::{{figure}} {path.name}\n:alt: {alt}\n:width: 100%\n\n{caption}\n:::\n"


def section1(one, cores, settings):
    "Section 1's text and tables; bars {label: ratio} for the chart."
    names = ["plainrl step", "Gymnasium step", "EnvPool step", "gymnax step"]
    names += ["plainrl rollout", "gymnax rollout"]
    present = [m for m in names if m in one[0]["rates"]]
    missing = [PEERS[p] for p in ("gymnasium", "envpool", "gymnax") if not
               installed(p)]  # fmt: skip
    rows = [[r["n"]] + [fmt_rate(r["rates"][m]) for m in present] for r in one]
    ratios = [f"{a} / {b}" for a, b in COMPARISONS if f"{a} / {b}" in one[0]["ratios"]]
    bars = {}
    for r in one:
        for k in ratios:
            if k in r["ratios"] and r["n"] > 1:
                bars[f"{k}, {r['n']} copies"] = r["ratios"][k]
    out = [
        "## 1. CartPole throughput",
        "",
        "Steps per second (copy-steps), random actions drawn before the clock starts, "
        "finished copies restarting at once (autoreset). *Per step*: one call steps "
        "every copy once — plainrl's `FusedCartPole.step` (one compiled kernel), "
        "Gymnasium's NumPy vector environment, EnvPool's C++ pool, gymnax under "
        "`jax.jit`. *Rollout*: one call takes "
        f"{settings['K']} steps — plainrl's `FusedCartPole.rollout` (a scan of the "
        "step, its loop compiled by Inductor) against gymnax's `jit` + `lax.scan`. "
        "Both rollouts return every step's observations, rewards and flags, and both "
        "restart finished copies from fresh random numbers (gymnax splits a key per "
        "copy and step, as PureJaxRL does). One thread for everything (torch, XLA, "
        f"EnvPool); {settings['repeats']} turns of about {settings['seconds']} s each. "
        "Compilation happens before the clock starts. The all-cores table means "
        "something only on a machine whose cores are otherwise idle.",
        "",
        table(["copies"] + present, rows),
        "",
    ]
    if missing:
        out += [f"Not installed, so not measured: {', '.join(missing)}.", ""]
    out += [
        "plainrl's speed over the peer's, like with like (median of the ratios "
        "within a turn), one thread:",
        "",
        ratio_table(ratios, one),
        "",
    ]
    if cores:
        n_cores = os.cpu_count()
        out += [
            f"The same on all {n_cores} cores (torch, XLA and EnvPool may use them; "
            "Gymnasium's NumPy step runs on one whatever is set):",
            "",
            ratio_table(ratios, cores),
            "",
        ]
    return out, bars


def section2(solve, race):
    "Section 2's text and tables; bars and curves for the figures."
    s = {name: solve_summary(runs) for name, runs in solve.items()}
    rows = []
    for name, f in s.items():
        rows.append(
            [
                name,
                f"{f['solved']}/{f['seeds']}",
                spread(f["steps"], ",.0f"),
                spread(f["wall"], ".1f"),
                f"{f['stayed']}/{f['seeds']}",
            ]
        )
    bars, text = {}, []
    book, engine = s["textbook loop"], s["engine, textbook settings"]
    if book["wall"] and engine["wall"]:
        speed = statistics.median(book["wall"]) / statistics.median(engine["wall"])
        bars["engine / textbook loop, time to solve"] = speed
        text.append(
            f"**(a)** The engine reaches the target **{speed:.1f}×** sooner in wall "
            "time than the textbook loop with the same settings (ratio of medians); "
            "their steps to solve agree within the spread of the seeds, as they must: "
            "the same algorithm, batch, network, initial weights and optimizer."
        )
    recipe = s["recipe"]
    if book["steps"] and recipe["steps"]:
        fewer = statistics.median(book["steps"]) / statistics.median(recipe["steps"])
        sooner = statistics.median(book["wall"]) / statistics.median(recipe["wall"])
        text.append(
            f"**(b)** A **recipe comparison**, not a measure of the package: chapter "
            f"7's recipe solves with {fewer:.1f}× fewer environment steps and "
            f"{sooner:.1f}× less wall time than the textbook settings."
        )
    out = [
        "## 2. Time to solve CartPole-v1",
        "",
        f"Solved: the mean return of the last {race.window} episodes reaches "
        f"{race.target:.0f}, checked after every update; each run then trains on for "
        f"{race.window} more episodes, and *stayed solved* counts the seeds whose mean "
        f"return is still at least {race.target:.0f} at the end. A run stops unsolved "
        f"after {race.max_env_steps:,} steps. Medians over the seeds, range in "
        "brackets.",
        "",
        f"*Textbook loop*: REINFORCE as the textbooks write it: one Gymnasium "
        "environment, one episode at a time, one policy call per action; "
        f"{race.episodes} whole episodes per update, reward-to-go weights, the loss "
        "averaged over the batch's steps, one hidden layer of 32 tanh units, Adam "
        f"{race.lr:g}. *Engine, textbook settings*: the same batch, loss, network, "
        "initial weights and optimizer through plainrl's `Trainer` "
        "(`aggregate='token_mean'`), its copies stepping together. *Recipe*: chapter "
        "7's: 16 episodes per update, two hidden layers of 32, reward-to-go minus a "
        "moving-average baseline (β = 0.7), the loss of eq. 12, Adam 0.01.",
        "",
        table(["method", "solved", "steps to solve", "seconds", "stayed"], rows),
        "",
        *[t + "\n" for t in text],
    ]
    curves = {name: [c for _, c in runs] for name, runs in solve.items()}
    return out, bars, curves


def section3(lm, sampling, settings):
    "Section 3's text and tables; bars and curves for the figures."
    out = [
        "## 3. The language-model engine against TRL",
        "",
        "The addition task of chapter 8 (`AdditionTask` and its verifier), a GPT-2 "
        f"of {settings.layers} layers of width {settings.width} built here with the "
        "character tokenizer `plainrl.hf.char_tokenizer`, pretrained for "
        f"{settings.pretrain_steps} steps on the task's corpus so that RL starts from "
        "partial success. Both sides start from that model: "
        f"{settings.prompts} prompts × {settings.group} answers per update, GRPO's "
        "group-normalised advantage, β = 0 (no KL), one gradient step per batch, the "
        f"loss averaged over the batch's tokens, Adam {settings.lr:g} at a constant "
        "rate, no gradient clipping, sampling at temperature 1, float32. plainrl: the "
        "engine through `plainrl.hf` (`HFPolicy`, the sample stage of the model's "
        "cache, one forward pass per answer in the update, the prompts without the "
        "task's all-padding columns, as TRL pads them), skipping the rows of weight 0 "
        "(`skip_zero_weights`, chapter 8: the same step, less arithmetic) and, as a "
        "second line, reading every row. TRL: `GRPOTrainer` (`loss_type='bnpo'`, "
        "`bf16=False`: its configuration defaults to bf16 autocast, on the CPU too); "
        "it has no option that skips rows. The GPT-2 has no dropout; it counts "
        "positions from each row's first real token when its caller gives none (TRL's "
        "loss forward gives none: with left-padded prompts it would otherwise train on "
        "other positions than it sampled with); and its head gives the padding token "
        "a fixed logit of -10⁹, because TRL samples and scores over the whole "
        "vocabulary and plainrl's policy over every token but the padding: so both "
        "hold the same π_θ.",
        "",
    ]
    curves, small, check = lm
    if check is not None:
        out += [
            f"**The same algorithm, checked.** One batch of {check['rows']} answers "
            "sampled by plainrl from the pretrained model, its gradient computed by "
            "both sides — plainrl's `update` (which skipped the "
            f"{check['skipped']} rows of weight 0) and TRL's GRPO loss "
            "(`GRPOTrainer._compute_loss`) on the same prompts, answers and "
            "advantages: the gradients differ by at most "
            f"**{check['gradient']:.1e}** of their size, parameter by parameter, and "
            "TRL's advantage formula gives plainrl's weights to within "
            f"{check['advantages']:.0e}.",
            "",
        ]
    bars, speed_rows, reward_rows = {}, [], []
    big = settings.group * settings.prompts
    at_big = {k: [c[-1][1] / c[-1][0] for c in v] for k, v in curves.items()}
    for answers, per_s in ((8 * settings.group, small), (big, at_big)):
        if not per_s["plainrl"]:
            continue
        updates = {k: statistics.median(v) for k, v in per_s.items() if v}
        rate = {k: u * answers for k, u in updates.items()}
        row = [answers] + [
            f"{rate[k]:,.0f} ({updates[k]:.1f})" if k in rate else "–" for k in SIDES
        ]
        for name in SIDES[:2]:
            if "TRL" in rate:
                x = rate[name] / rate["TRL"]
                row.append(f"**{x:.2f}×**")
                bars[f"{name} / TRL, samples/s, {answers} per update"] = x
            else:
                row.append("–")
        speed_rows.append(row)
    for name, runs in curves.items():
        if runs:
            first = [statistics.mean(c[2] for c in run[:10]) for run in runs]
            last = [statistics.mean(c[2] for c in run[-10:]) for run in runs]
            reward_rows.append([name, spread(first, ".2f"), spread(last, ".2f")])
    header = ["answers per update", *SIDES, "plainrl / TRL", "every row / TRL"]
    out += [
        "Samples (answers) per second and, in brackets, updates per second, the "
        "median over the seeds, at two batch sizes: the learning curves' and 8 "
        "prompts per update, where the cost of each update's machinery weighs more "
        "than the model's arithmetic:",
        "",
        table(header, speed_rows),
        "",
        f"Mean reward over {len(curves['plainrl'])} seeds (median and range), "
        f"{big} answers per update (the two plainrl lines take the same steps: "
        "they differ only by rounding):",
        "",
        table(
            ["", "first 10 updates", f"last 10 of {settings.updates}"], reward_rows
        ),  # fmt: skip
        "",
    ]
    if curves["TRL"] and curves["plainrl"]:
        ends = {
            name: [statistics.mean(c[2] for c in run[-10:]) for run in curves[name]]
            for name in ("plainrl", "TRL")
        }
        low = max(min(v) for v in ends.values())
        high = min(max(v) for v in ends.values())
        gap = statistics.mean(ends["plainrl"]) - statistics.mean(ends["TRL"])
        k = len(ends["TRL"])
        error = (
            (statistics.variance(ends["plainrl"]) + statistics.variance(ends["TRL"]))
            / k
        ) ** 0.5 if k > 1 else float("nan")  # fmt: skip
        out += [
            f"Last 10 updates, plainrl minus TRL: {gap:+.3f} ± {error:.3f} (mean "
            "over the seeds ± its standard error). "
            + (
                "The ranges overlap: the two learn alike within the seeds' spread."
                if low <= high
                else "The ranges do not overlap: over this many updates the two do "
                "not learn alike."
            ),
            "",
        ]
    if not curves["TRL"]:
        out += ["TRL is not installed: not measured.", ""]
    out += [
        "Sampling alone: tokens per second of plainrl's sampling and of the model's "
        f"own `generate` (sampling with its cache, {sampling['n_tokens']} new tokens, "
        "no early stop), on the same untrained GPT-2; the ratio is the median of the "
        f"{sampling['turns']} turns' ratios, their range in brackets. Both read "
        "the model through the same cache (transformers' `DynamicCache`), so beyond "
        "the smallest batch, where the per-token machinery weighs, the two do the same "
        "work:",
        "",
        table(
            ["batch", "plainrl (tokens/s)", "`generate` (tokens/s)", "ratio"],
            [
                [
                    r["B"],
                    fmt_rate(r["rates"]["plainrl"]),
                    fmt_rate(r["rates"]["generate"]),
                    f"{r['ratio']:.2f}× ({r['spread'][0]:.2f}–{r['spread'][1]:.2f})",
                ]
                for r in sampling["rows"]
            ],
        ),  # fmt: skip
        "",
    ]
    for r in sampling["rows"]:
        bars[f"plainrl sampling / generate, batch {r['B']}"] = r["ratio"]
    shown = {k: v for k, v in curves.items() if v and k != "plainrl, every row"}
    return out, bars, shown


def gpu_section(info):
    "The GPU rows of `make gpu-check` if committed, else a statement that none are."
    if GPU_ROWS.exists():
        return ["## GPU", "", GPU_ROWS.read_text().strip(), ""]
    return [
        "## GPU",
        "",
        "Not measured: no GPU has run `make gpu-check` yet (its rows go here, with "
        "the GPU named). Every figure above is a CPU figure.",
        "",
    ]


def render(info, results, settings, seconds, out):
    "The benchmarks page (MyST Markdown) and its figures beside `out`."
    quick = (
        " (quick mode: tiny settings, not for the book)" if settings["quick"] else ""
    )
    page = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (`python benchmarks/bench.py`) on "
        f"{date.today().isoformat()} in {seconds / 60:.1f} minutes{quick}"
        ". Every figure is a ratio to a peer measured in the same run on this "
        "machine, the two taking turns; timings move with what else the machine is "
        "doing, the ratios less.",
        "",
        table(["machine", ""], list(info.items())),
        "",
    ]
    text1, bars1 = section1(results["one"], results["cores"], settings)
    text2, bars2, curves2 = section2(results["solve"], settings["race"])
    text3, bars3, curves3 = section3(results["lm"], results["sampling"],
                                     settings["lm"])  # fmt: skip
    bars = bars1 | bars2 | bars3
    ratios_png = out.with_name("benchmarks_ratios.png")
    curves_png = out.with_name("benchmarks_curves.png")
    ratio_figure(bars, ratios_png)
    panels = {"CartPole (section 2)": ("mean return, last 100 episodes", curves2)}
    if curves3:
        panels["addition with GPT-2 (section 3)"] = ("mean reward", curves3)
    curves_figure(panels, curves_png)
    page += [
        figure(ratios_png, "Bar chart of plainrl's speed over each peer's, one bar per "
               "benchmark and size, on a log scale with a line at 1",
               "plainrl's speed over the peer's in every like-with-like comparison "
               "below (one thread; green: plainrl faster)."),
        figure(curves_png, "Learning curves against wall time: CartPole's mean "
               "return for the textbook loop, the engine with its settings and the "
               "recipe; the addition task's reward for plainrl and TRL",
               "Learning curves against wall time, one line per seed: CartPole's "
               "textbook loop, the engine with its settings and the recipe; the "
               "addition task's plainrl and TRL (section 3 says how closely they "
               "agree)."),
    ]  # fmt: skip
    page += text1 + text2 + text3 + gpu_section(info)
    out.write_text("\n".join(page))


def main(argv=None):
    "`python benchmarks/bench.py`: run the benchmarks, write the page and figures."
    p = argparse.ArgumentParser(prog="benchmarks/bench.py", description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "book" / "benchmarks.md")
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings, to check that everything runs (not the book)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)  # section 1 in a subprocess
    args = p.parse_args(argv)  # fmt: skip
    if args.worker:
        print(json.dumps(throughput_worker(**json.loads(args.worker))))
        return 0
    torch.set_num_threads(1)
    quick = args.quick
    race = Race(max_env_steps=3_000) if quick else Race()
    lm = LM(group=2, prompts=2, updates=2, pretrain_steps=2) if quick else LM()
    settings = {
        "quick": quick,
        "K": 20 if quick else 500,
        "race": race,
        "lm": lm,
        "seconds": 0.02 if quick else 0.5,
        "repeats": 1 if quick else 5,
    }
    start = time.perf_counter()  # fmt: skip

    def log(message):
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr)

    results = {}
    sizes = [1, 64] if quick else [1, 64, 1024, 4096]
    run = dict(sizes=sizes, K=settings["K"], seconds=settings["seconds"],
               repeats=settings["repeats"], compile=not quick)  # fmt: skip
    log("1. CartPole throughput, one thread")
    results["one"] = throughput(1, **run)
    cores = os.cpu_count()
    results["cores"] = None
    if cores > 1 and not quick:
        log(f"1. CartPole throughput, {cores} threads")
        results["cores"] = throughput(cores, **run)
    log("2. time to solve CartPole")
    seeds = range(1) if quick else range(5)
    if installed("gymnasium"):
        results["solve"] = time_to_solve(seeds, race)
    else:
        results["solve"] = {}
    log("3. the language-model engine against TRL")
    import tempfile

    with tempfile.TemporaryDirectory() as workdir:
        results["lm"] = lm_race(lm, range(1) if quick else range(5), workdir)
    batches = [1, 8] if quick else [1, 64, 256]
    n_tokens = 4 if quick else 24
    rows = sampling_race(batches, n_tokens, settings["seconds"], settings["repeats"])
    results["sampling"] = {"rows": rows, "n_tokens": n_tokens,
                           "turns": settings["repeats"]}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    render(machine(), results, settings, time.perf_counter() - start, args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
