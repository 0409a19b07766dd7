"""The benchmarks of the book: plainrl against real peers, measured side by side.

`make bench` runs `python benchmarks/bench.py --out book/benchmarks.md`; `--quick`
runs tiny settings (the test suite does). This script is not part of the package: it
is the one place besides the tests that imports Gymnasium."""

import argparse
import copy
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

from plainrl.advantages import VARIANTS, Weights
from plainrl.cli import config
from plainrl.engine import Trainer
from plainrl.envs.cartpole import CartPole
from plainrl.envs.fused import FusedCartPole
from plainrl.envs.tokens import PROMPT_LEN, VOCAB_SIZE, TokenTask
from plainrl.generate import rollout_tokens
from plainrl.policy import TransformerPolicy
from plainrl.pretrain import base_model
from plainrl.runs import Checkpoints
from plainrl.trajectory import rollout


def machine():
    """What the figures were measured on: CPU model, cores, threads, library
    versions, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in f
                if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    import gymnasium

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "CPU": cpu,
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "GPU": gpu,
        "Python": platform.python_version(),
        "torch": torch.__version__,
        "NumPy": np.__version__,
        "Gymnasium": gymnasium.__version__,
    }


def table(header, rows):
    "A Markdown table."
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(
        lines + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    )


def random_actions(n, batches=64, seed=0):
    """`batches` batches of n random actions in {0, 1}, drawn before any clock
    starts; the steppers cycle through them."""
    return torch.randint(
        0, 2, (batches, n), generator=torch.Generator().manual_seed(seed)
    )


def gymnasium_stepper(actions, seed=0):
    """One step of Gymnasium's NumPy-vectorised CartPole-v1 with a copy per column
    of`actions` (it restarts finished copies)."""
    import gymnasium as gym

    env = gym.make_vec(
        "CartPole-v1",
        num_envs=actions.shape[1],
        vectorization_mode="vector_entry_point",
    )
    env.reset(seed=seed)
    batches = itertools.cycle(actions.numpy())
    return lambda: env.step(next(batches))


def plainrl_stepper(env, actions):
    """One step of plainrl's CartPole `env`, restarting the finished copies
    as Gymnasium does: in the step with autoreset, else by reset(mask)."""
    env.reset()
    batches = itertools.cycle(actions.unbind(0))
    if getattr(env, "autoreset", False):
        return lambda: env.step(next(batches))

    def step():
        obs, reward, terminated, truncated = env.step(next(batches))
        env.reset(terminated | truncated)

    return step


def steps_per_second(step, n, seconds):
    """Copy-steps per second of `step` (n copies), timed over about `seconds`, after
    10untimed steps."""
    for _ in range(10):
        step()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(10):
            step()
        count += 10
    return n * count / elapsed


def env_throughput(
    sizes=(1, 64, 1024, 4096), seconds=0.5, repeats=5, cores=os.cpu_count()
):
    """Environment steps per second of Gymnasium, plainrl's eager CartPole and its
    compiled FusedCartPole (autoreset).

    The compiled step is measured twice when the machine has more than one core: on
    one torch thread, and compiled for `cores` threads (Inductor splits the
    copies between them; NumPy steps on one whatever is set). The methods take
    turns, `repeats` times, each stepping for about `seconds` through the same
    random actions; a ratio is the median over the turns of (plainrl rate /
    Gymnasium rate) in the same turn. Compilation happens first (its time is
    reported apart) and is not counted."""
    threads_before, rows = torch.get_num_threads(), []
    for n in sizes:
        actions = random_actions(n)
        fused, compile_s = {}, {}  # by number of threads
        for threads in sorted({1, cores}):
            torch.set_num_threads(
                threads
            )  # Inductor generates the kernel for the thread count at compile time
            start = time.perf_counter()
            fused[threads] = FusedCartPole(n, device="cpu", autoreset=True)
            compile_s[threads] = time.perf_counter() - start
        steppers = {
            "gymnasium": (1, gymnasium_stepper(actions)),
            "eager": (1, plainrl_stepper(CartPole(n, device="cpu"), actions)),
            "compiled": (1, plainrl_stepper(fused[1], actions)),
        }
        if cores > 1:
            steppers["cores"] = (cores, plainrl_stepper(fused[cores], actions))
        rates = {name: [] for name in steppers}
        for _ in range(repeats):
            for name, (threads, step) in steppers.items():
                torch.set_num_threads(threads)
                rates[name].append(steps_per_second(step, n, seconds))
        rows.append(
            {
                "n": n,
                "compile_s": compile_s[1],
                "cores": cores,
                **{f"{name}_rate": statistics.median(r) for name, r in rates.items()},
                **{
                    f"{name}_ratio": statistics.median(
                        r / g for r, g in zip(rates[name], rates["gymnasium"])
                    )
                    for name in rates
                    if name != "gymnasium"
                },
            }
        )
    torch.set_num_threads(threads_before)
    return rows


class TextbookPolicy(nn.Module):
    "The textbook REINFORCE policy: one hidden layer of 32 tanh units."

    def __init__(self, hidden=32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))

    def forward(self, obs):
        return Categorical(logits=self.net(obs))


def textbook_reinforce(
    seed, batch_steps=5000, lr=1e-2, max_env_steps=500_000, window=100, target=475.0
):
    """REINFORCE as the textbooks write it (Spinning Up's reward-to-go example): one
    Gymnasium CartPole-v1, one episode at a time, one action per policy call; an
    update after each batch of >= `batch_steps` steps, with loss -mean over the
    batch's steps of log π(a_t|s_t)·R̂_t. Solved when the mean return of the last
    `window` episodes reaches `target` (checked after each update, as plainrl
    does); then it trains on until `window` more episodes have finished and
    reports their mean. Returns a dict of the figures."""
    import gymnasium as gym

    torch.manual_seed(seed)
    env, policy = gym.make("CartPole-v1"), TextbookPolicy()
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    returns, env_steps, solved, start, episode_seed = (
        [],
        0,
        None,
        time.perf_counter(),
        seed * 100_000,
    )
    while env_steps < max_env_steps:
        obs_batch, act_batch, weights = [], [], []
        while (
            len(obs_batch) < batch_steps
        ):  # whole episodes until the batch has batch_steps steps
            obs, _ = env.reset(seed=episode_seed)
            episode_seed += 1
            rewards, done = [], False
            while not done:
                with torch.no_grad():
                    action = (
                        policy(torch.as_tensor(obs, dtype=torch.float32))
                        .sample()
                        .item()
                    )
                obs_batch.append(obs)
                act_batch.append(action)
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(reward)
                done = terminated or truncated
            weights += list(np.cumsum(rewards[::-1])[::-1])  # reward-to-go R̂_t
            returns.append(sum(rewards))
        env_steps += len(obs_batch)
        obs_t = torch.as_tensor(np.array(obs_batch), dtype=torch.float32)
        loss = -(
            policy(obs_t).log_prob(torch.as_tensor(act_batch))
            * torch.as_tensor(weights, dtype=torch.float32)
        ).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if (
            solved is None
            and len(returns) >= window
            and np.mean(returns[-window:]) >= target
        ):
            solved = {
                "env_steps": env_steps,
                "wall_s": time.perf_counter() - start,
                "episodes": len(returns),
            }
        if solved and len(returns) >= solved["episodes"] + window:
            return {**solved, "after": float(np.mean(returns[-window:]))}
    return {"env_steps": None, "wall_s": None, "after": None, "spent_steps": env_steps}


SOLVE = {
    "num_envs": 16,
    "lr": 0.01,
    "hidden": 32,
    "beta": 0.7,
}  # plainrl's settings in the time-to-solve race


def plainrl_reinforce(variant, seed, max_env_steps=500_000, **settings):
    """plainrl's engine on CartPole with `variant` and the settings (default SOLVE):
    until solved, then resumed from its checkpoint until `window` more episodes
    have finished; reports when it solved and the mean return at the end."""
    returns, baseline = VARIANTS[variant]
    cfg = config(
        "cartpole",
        **{**SOLVE, **settings},
        returns=returns,
        baseline=baseline,
        seed=seed,
        device="cpu",
        max_env_steps=max_env_steps,
        max_updates=10**6,
    )

    def run(budget, run_dir, resume=False):
        hooks = [Checkpoints(run_dir, every=10**6, resume=resume)]
        weigh = Weights(returns, baseline, cfg.weights.beta)
        return Trainer(
            cfg.task,
            None,
            cfg.algo,
            budget,
            seed=seed,
            device="cpu",
            weigh=weigh,
            hooks=hooks,
        ).fit()

    with tempfile.TemporaryDirectory() as run_dir:
        first = run(cfg.budget, run_dir)
        state = first.state
        if state.solved_at is None:
            spent = state.rows[-1]["env_steps"]
            return {
                "env_steps": None,
                "wall_s": None,
                "after": None,
                "spent_steps": spent,
            }
        row = state.rows[state.solved_at - 1]
        more = -(-cfg.budget.window // cfg.task.num_envs)  # updates for `window` more
        budget = replace(
            cfg.budget, max_updates=state.solved_at + more, stop_when_solved=False
        )
        after = run(budget, run_dir, resume=True)
    return {
        "env_steps": row["env_steps"],
        "wall_s": row["wall_s"],
        "after": after.state.rows[-1]["return"],
    }


def time_to_solve(seeds=range(5), variants=VARIANTS, max_env_steps=500_000):
    """Every variant of plainrl, rtg+baseline again with chapter 6's baseline β, and the
    textbook REINFORCE on every seed: {name: [figures per seed]}."""
    results = {
        f"plainrl {v}": [
            plainrl_reinforce(v, s, max_env_steps=max_env_steps) for s in seeds
        ]
        for v in variants
    }
    beta = config("cartpole").weights.beta
    results[f"plainrl rtg+baseline, β = {beta}"] = [
        plainrl_reinforce("rtg+baseline", s, max_env_steps=max_env_steps, beta=beta)
        for s in seeds
    ]
    results["textbook REINFORCE"] = [
        textbook_reinforce(s, max_env_steps=max_env_steps) for s in seeds
    ]
    return results


def token_throughput(batch_sizes=(1, 64, 256, 1024), answer_len=8, seconds=1.0):
    """Sampled answers per second of `rollout_tokens` (key-value cache) and `rollout`
    (the prefix re-read for every token), on an untrained TransformerPolicy for
    answers of `answer_len` tokens (the cost does not depend on the weights).
    Alternating turns of about `seconds` each."""
    torch.manual_seed(0)
    policy = TransformerPolicy(VOCAB_SIZE, PROMPT_LEN + answer_len, device="cpu")
    rows = []
    for B in batch_sizes:
        rates = {"re-encode": [], "kv cache": []}
        for _ in range(3):
            for name, sample in (("re-encode", rollout), ("kv cache", rollout_tokens)):
                task = TokenTask(B, answer_len=answer_len, device="cpu", seed=0)
                sample(task, policy)
                t0, k = time.perf_counter(), 0
                while time.perf_counter() - t0 < seconds / 3:
                    sample(task, policy)
                    k += 1
                rates[name].append(B * k / (time.perf_counter() - t0))
        rows.append(
            {
                "B": B,
                **{name: statistics.median(r) for name, r in rates.items()},
                "ratio": statistics.median(
                    c / u for c, u in zip(rates["kv cache"], rates["re-encode"])
                ),
            }
        )
    return rows


def token_training(seeds=range(3)):
    """Chapter 6's token-task run (`config('tokens')`) with and without the cache:
    updates and seconds to 90% success."""
    cfg = config("tokens", device="cpu")
    base = base_model(cfg.task.answer_len, seed=0, device="cpu")  # as the task builds
    rows = []
    for seed in seeds:
        for kv_cache in (True, False):
            sample = rollout_tokens if kv_cache else rollout
            run = Trainer(
                cfg.task,
                copy.deepcopy(base),
                cfg.algo,
                cfg.budget,
                seed=seed,
                device="cpu",
                sample=sample,
                weigh=replace(cfg.weights),
            ).fit()
            last = run.state.rows[-1]
            rows.append(
                {
                    "seed": seed,
                    "kv_cache": kv_cache,
                    "solved_at": run.state.solved_at,
                    "wall_s": last["wall_s"],
                    "success": last["success"],
                    "answer_len": cfg.task.answer_len,
                }
            )
    return rows


def _fmt(x, spec=",.0f"):
    return "–" if x is None else format(x, spec)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def solve_summary(results, target=475.0):
    """One row per method: seeds solved, median steps and seconds to solve, seeds
    stillsolved after, and the best."""
    rows = {}
    for name, runs in results.items():
        rows[name] = {
            "solved": sum(r["env_steps"] is not None for r in runs),
            "seeds": len(runs),
            "steps": _median([r["env_steps"] for r in runs]),
            "wall": _median([r["wall_s"] for r in runs]),
            "stayed": sum(
                r["after"] is not None and r["after"] >= target for r in runs
            ),
        }
    complete = [
        n
        for n in rows
        if n.startswith("plainrl") and rows[n]["solved"] == rows[n]["seeds"]
    ]
    best = min(complete, key=lambda n: rows[n]["wall"]) if complete else None
    return rows, best


def render(info, throughput, solve, tokens_rate, tokens_train, seconds, settings):
    "The benchmarks page, MyST Markdown."
    rows, best = solve_summary(solve)
    base = rows["textbook REINFORCE"]
    t = throughput
    kinds = ["eager", "compiled"] + (
        ["cores"] if "cores_rate" in t[0] else []
    )  # the plainrl columns of section 1
    label = {
        "eager": "eager",
        "compiled": "compiled",
        "cores": f"compiled, {t[0]['cores']} threads",
    }
    out = [
        "# Benchmarks",
        "",
        "Measured by `make bench` (`python benchmarks/bench.py`) on "
        f"{date.today().isoformat()}, in {seconds / 60:.1f} "
        "minutes. Every figure is a ratio to a peer measured in the same run, on this "
        "machine:",
        "",
        table(["machine", ""], list(info.items())),
        "",
        "Timings are wall-clock seconds on a CPU, with torch limited to "
        f"{info['torch threads']} thread(s) (NumPy and Gymnasium use one), except "
        "where a column says otherwise. "
        "They move with what else the machine is doing; the ratios move less, because "
        "the peers take turns.",
        "",
        "## 1. Environment throughput: CartPole",
        "",
        "Random actions, all copies stepping at once; copies that finish start a new "
        "episode at once, as in "
        "Gymnasium's vector environments. *Eager* is `CartPole` of chapter 3 (one "
        "PyTorch operation at a time), "
        "*compiled* is `FusedCartPole(autoreset=True)` of chapter 9 (the whole step, "
        "restarts included, as one kernel "
        "generated by Inductor), on one thread. The random actions are drawn before "
        "the clock starts. "
        f"The methods take {settings['repeats']} turns of about {settings['seconds']} "
        "s each.",
        "",
        "Steps per second:",
        "",
        table(
            ["copies", "Gymnasium"] + [label[k] for k in kinds] + ["compile time (s)"],
            [
                [r["n"], _fmt(r["gymnasium_rate"])]
                + [_fmt(r[f"{k}_rate"]) for k in kinds]
                + [f"{r['compile_s']:.1f}"]
                for r in t
            ],
        ),
        "",
        "Ratios to Gymnasium:",
        "",
        table(
            ["copies"] + [f"{label[k]} / Gymnasium" for k in kinds],
            [
                [r["n"]]
                + [
                    f"{r[f'{k}_ratio']:.2f}×"
                    if k == "eager"
                    else f"**{r[f'{k}_ratio']:.2f}×**"
                    for k in kinds
                ]
                for r in t
            ],
        ),
        "",
        *(
            [
                f"*{label['cores']}* is the same step compiled for the "
                f"{t[0]['cores']} cores of this machine: Inductor "
                "splits the copies between the threads. Gymnasium's NumPy step has no "
                "such option and runs on one core "
                "whatever torch is set to, so this column compares what the machine "
                "delivers, not the speed of a core.",
                "",
            ]
            if "cores" in kinds
            else []
        ),
        "Compilation happens once per number of copies, before the timed steps, and "
        "is not counted in the rates; "
        "later runs reuse Inductor's on-disk cache.",
        "",
        "## 2. Time to solve CartPole-v1",
        "",
        "Solved: the mean return of the last 100 episodes reaches 475, checked after "
        "every update. Then each run "
        "trains on until 100 more episodes have finished; *stayed solved* counts the "
        "seeds whose mean return over "
        f"those episodes is still at least 475. {len(next(iter(solve.values())))} "
        "seeds each; a run stops unsolved "
        f"after {settings['max_env_steps']:,} environment steps. plainrl: chapter 6's "
        "`Trainer` with "
        f"{settings['num_envs']} episodes per update, Adam {settings['lr']}, two "
        f"hidden layers of {settings['hidden']}, "
        f"moving-average baseline β = {settings['beta']} (eq. 15). Chapter 6 uses β = "
        f"{config('cartpole').weights.beta}; "
        "a baseline that lags about 1/(1 − β) updates behind the returns leaves large "
        "positive weights once the "
        "policy reaches 500, which can push a solved policy off: the row with chapter "
        "6's β measures it. "
        "Textbook REINFORCE: one Gymnasium environment, one episode at a time, one "
        "policy call per action, a "
        "batch of 5,000 steps per update, reward-to-go weights, one hidden layer of "
        "32, Adam 1e-2 (as OpenAI "
        "Spinning Up's example {cite}`achiam2018spinningup`).",
        "",
        table(
            [
                "method",
                "seeds solved",
                "median env steps to solve",
                "median seconds to solve",
                "stayed solved",
            ],
            [
                [
                    name,
                    f"{r['solved']}/{r['seeds']}",
                    _fmt(r["steps"]),
                    _fmt(r["wall"], ".1f"),
                    f"{r['stayed']}/{r['seeds']}",
                ]
                for name, r in rows.items()
            ],
        ),
        "",
    ]
    if best and base["steps"]:
        b = rows[best]
        out += [
            "Best plainrl variant (fastest median among those that solved every "
            f"seed): **{best}**: "
            f"**{base['wall'] / b['wall']:.1f}×** less wall time and "
            f"**{base['steps'] / b['steps']:.1f}×** "
            "fewer environment steps than textbook REINFORCE (ratios of medians). "
            "This is a **recipe comparison**, not a measure of the package: the two "
            "differ in batch size, network, baseline and its β, and the best of five "
            "variants was picked; an engine-against-textbook race at identical "
            "settings is not measured yet.",
            "",
        ]
    else:
        out += [
            "No plainrl variant solved every seed, or the textbook baseline solved "
            "none: no ratio.",
            "",
        ]
    out += [
        "Per seed (env steps to solve; – = not solved within the budget):",
        "",
        table(
            ["method"] + [f"seed {i}" for i in range(len(next(iter(solve.values()))))],
            [
                [name] + [_fmt(r["env_steps"]) for r in runs]
                for name, runs in solve.items()
            ],
        ),
        "",
        "## 3. Token task",
        "",
        f"Sampled answers per second, answers of {settings['answer_len']} tokens "
        f"after a {PROMPT_LEN}-token prompt: "
        "`rollout_tokens` (a key–value cache: each token reads only itself) against "
        "`rollout` (the policy "
        "re-reads the whole prefix for every token). Same policy (an untrained "
        "`TransformerPolicy`: the cost "
        "does not depend on the weights), same sampled tokens.",
        "",
        table(
            [
                "batch size",
                "re-encode (answers/s)",
                "KV cache (answers/s)",
                "KV cache / re-encode",
            ],
            [
                [
                    r["B"],
                    _fmt(r["re-encode"]),
                    _fmt(r["kv cache"]),
                    f"**{r['ratio']:.2f}×**",
                ]
                for r in tokens_rate
            ],
        ),
        "",
        "From the base model to 90% verifier success with chapter 6's settings "
        "(`config('tokens')`: answers of "
        f"{tokens_train[0]['answer_len']} token(s), {config('tokens').task.num_envs} "
        "answers per update):",
        "",
        table(
            ["seed", "KV cache", "updates to 90%", "seconds", "success at the end"],
            [
                [
                    r["seed"],
                    "yes" if r["kv_cache"] else "no",
                    _fmt(r["solved_at"], "d"),
                    f"{r['wall_s']:.1f}",
                    f"{r['success']:.2f}",
                ]
                for r in tokens_train
            ],
        ),
        "",
        "## GPU",
        "",
        (
            "Not measured yet: no GPU was available when this page was generated. "
            "Every figure above is a CPU figure."
            if info["GPU"] == "none"
            else f"A GPU ({info['GPU']}) was present, but every figure above was "
            "measured on the CPU; the GPU rows are not measured yet."
        ),
        "",
    ]
    return "\n".join(out)


def main(argv=None):
    "`python benchmarks/bench.py`: run the benchmarks and write the page."
    p = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="Measure plainrl against its peers and "
        "write the benchmarks page of the book.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("book/benchmarks.md"), help="the page to write"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny settings, to check that everything runs (not for the book)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for sections 2 and 3 (default 1, as NumPy); "
        "section 1 measures one thread and all cores",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    quick = args.quick
    settings = {
        "seconds": 0.2 if quick else 0.5,
        "repeats": 2 if quick else 5,
        **SOLVE,
        "max_env_steps": 30_000 if quick else 500_000,
        "answer_len": 8,
    }
    start = time.perf_counter()

    def log(msg):
        seconds = time.perf_counter() - start
        print(f"[{seconds:6.0f} s] {msg}", file=sys.stderr, flush=True)

    log("1. environment throughput")
    throughput = env_throughput(
        sizes=(1, 64) if quick else (1, 64, 1024, 4096),
        seconds=settings["seconds"],
        repeats=settings["repeats"],
    )
    log("2. time to solve CartPole")
    solve = time_to_solve(
        seeds=range(2) if quick else range(5), max_env_steps=settings["max_env_steps"]
    )
    log("3. token task")
    tokens_rate = token_throughput(
        batch_sizes=(1, 64) if quick else (1, 64, 256, 1024),
        seconds=0.3 if quick else 1.0,
    )
    tokens_train = token_training(seeds=range(1) if quick else range(3))
    page = render(
        machine(),
        throughput,
        solve,
        tokens_rate,
        tokens_train,
        time.perf_counter() - start,
        settings,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
