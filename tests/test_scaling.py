"""Chapter 9: the fused CartPole, generation with the cache, checkpoints, the hooks
around chapter 6's Trainer (resume, the run directory, signals, bf16, compile) and the
clipped loss of part two."""

import math
import os
import signal
from dataclasses import replace

import pytest
import torch
from conftest import ALLOWED, no_host_reads

from plainrl.advantages import VARIANTS, Weights
from plainrl.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    save_checkpoint,
)
from plainrl.cli import config
from plainrl.engine import Algorithm, Budget, Trainer, update
from plainrl.envs.cartpole import CartPole
from plainrl.envs.fused import (
    FusedCartPole,
    _counter_uniform,
    compile_kernel,
    counter_uniform,
)
from plainrl.envs.tokens import MAX_ANSWER_LEN, PROMPT_LEN, VOCAB_SIZE, TokenTask
from plainrl.generate import generate, rollout_tokens
from plainrl.losses import reinforce_loss
from plainrl.policy import MLPPolicy, TransformerPolicy
from plainrl.runs import (
    Autocast,
    Checkpoints,
    Compiled,
    Interrupted,
    RunDirError,
    clipped_loss,
)
from plainrl.trajectory import rollout


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "The networks are tiny: one thread is fastest, and two contend with xdist."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params(policy):
    return [p.detach().clone() for p in policy.parameters()]


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def strip(rows):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


# ---------------------------------------------------------------- FusedCartPole
@pytest.fixture(scope="module")
def compiled():
    """One compiled FusedCartPole for the module (compilation takes seconds; it is
    cached per shape)."""
    return FusedCartPole(64, device="cpu", seed=5)


def lockstep(env, steps=150, seed=0):
    """Step CartPole and `env` (same seed, same random actions); the largest state
    gap, and whether all else matched."""
    ref = CartPole(env.num_envs, device="cpu", seed=5)
    assert torch.equal(ref.reset(), env.reset())  # the same s_0 for the same seed
    g, gap = torch.Generator().manual_seed(seed), 0.0
    for _ in range(steps):
        action = torch.randint(0, 2, (env.num_envs,), generator=g)
        (o1, r1, te1, tr1), (o2, r2, te2, tr2) = ref.step(action), env.step(action)
        assert (
            torch.allclose(o1, o2, atol=1e-6)
            and torch.equal(r1, r2)
            and torch.equal(te1, te2)
            and torch.equal(tr1, tr2)
        )
        gap = max(gap, (ref.state - env.state).abs().max().item())
    assert torch.equal(ref.t, env.t) and torch.equal(ref.done, env.done)
    return gap


def test_fused_eager_equals_cartpole_exactly():
    assert lockstep(FusedCartPole(64, device="cpu", seed=5, compile=False)) == 0.0


def test_fused_compiled_matches_cartpole(compiled):
    assert (
        lockstep(compiled) < 1e-9
    )  # the compiled sin/cos may round differently in the last bit


def test_fused_truncates_at_500_like_cartpole():
    env = FusedCartPole(3, device="cpu", compile=False)
    env.reset()
    env.t = torch.tensor([498, 499, 10])
    _, reward, terminated, truncated = env.step(torch.zeros(3, dtype=torch.long))
    assert truncated.tolist() == [False, True, False] and reward.tolist() == [
        1.0,
        1.0,
        1.0,
    ]
    assert env.done.tolist() == [False, True, False] and env.t.tolist() == [
        499,
        500,
        11,
    ]
    _, reward, _, truncated = env.step(
        torch.zeros(3, dtype=torch.long)
    )  # the finished copy is frozen
    assert reward.tolist() == [1.0, 0.0, 1.0] and truncated.tolist() == [
        True,
        False,
        False,
    ]


def test_fused_bad_action_raises_and_changes_nothing(compiled):
    compiled.reset()
    before = compiled.state
    with pytest.raises(ValueError, match=r"action must lie in \[0, 2\)"):
        compiled.step(torch.full((64,), 2))
    with pytest.raises(ValueError, match=r"expected \[64\]"):
        compiled.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        compiled.step(torch.zeros(64))
    assert torch.equal(compiled.state, before)
    with pytest.raises(RuntimeError, match="reset"):
        FusedCartPole(2, device="cpu", compile=False).step(
            torch.zeros(2, dtype=torch.long)
        )


def test_fused_partial_reset_restarts_only_the_masked_copies(compiled):
    compiled.reset()
    for _ in range(30):
        compiled.step(torch.ones(64, dtype=torch.long))  # pushed right: all have fallen
    before, mask = compiled.state, torch.arange(64) % 3 == 0
    obs = compiled.reset(mask)
    state = compiled.state
    assert torch.equal(state[~mask], before[~mask]) and state[mask].abs().max() <= 0.05
    assert (
        torch.equal(compiled.done, ~mask)
        and (compiled.t[mask] == 0).all()
        and torch.equal(obs, state.float())
    )
    with pytest.raises(ValueError, match="mask"):
        compiled.reset(torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("autoreset", [False, True])
def test_fused_step_reads_nothing_back_from_the_device(compiled, autoreset):
    env = (
        FusedCartPole(64, device="cpu", seed=5, autoreset=True)
        if autoreset
        else compiled
    )
    env.reset()
    with no_host_reads() as allowed:
        for _ in range(30):
            env.step(
                torch.zeros(64, dtype=torch.long)
            )  # pushed left: copies fall and restart
    assert set(allowed) <= {("plainrl.checks", "check")}


def twin(env):
    "A CartPole in `env`'s state, just reset, to step beside it."
    env.reset()
    ref = CartPole(env.num_envs, device="cpu", seed=5)
    ref.reset()
    ref.state = env.state
    return ref


def step_both(ref, env, action):
    """Step CartPole `ref` and `env` with the same actions: the same observations,
    rewards and flags."""
    o1, o2 = ref.step(action.long()), env.step(action)
    assert torch.allclose(o1[0], o2[0], atol=1e-6) and all(
        torch.equal(a, b) for a, b in zip(o1[1:], o2[1:])
    )


def test_fused_accepts_any_integer_actions_of_the_right_shape(compiled):
    """The compiled kernel checks nothing itself: step must hand it int64, contiguous
    actions."""
    ref = twin(compiled)
    for action in (
        torch.ones(64, dtype=torch.int32),
        torch.zeros(64, 2, dtype=torch.long)[:, 1],
    ):
        step_both(ref, compiled, action)


def test_fused_keeps_its_tensors_in_the_kernels_layout(compiled):
    """The kernel checks no shapes or strides (compile_kernel turns Inductor's
    asserts off): the setters must."""
    ref = twin(compiled)
    strided_t = (torch.arange(128.0, dtype=torch.float64) % 400).view(64, 2)[
        :, 1
    ]  # views with stride 2; float64,
    strided_done = (torch.arange(128) % 5 == 0).view(64, 2)[
        :, 0
    ]  # as the kernel keeps t, so no copy
    ref.t, ref.done = strided_t.long(), strided_done.clone()
    compiled.t, compiled.done = strided_t, strided_done
    for _ in range(20):
        step_both(ref, compiled, torch.ones(64, dtype=torch.long))
    assert torch.equal(ref.t, compiled.t) and torch.equal(ref.done, compiled.done)
    with pytest.raises(ValueError, match=r"t has shape \[65\]; expected \[64\]"):
        compiled.t = torch.zeros(65, dtype=torch.long)
    with pytest.raises(ValueError, match=r"done has shape \[1\]; expected \[64\]"):
        compiled.done = torch.ones(1, dtype=torch.bool)


def autoreset_lockstep(env, steps=300):
    """Step `env` (autoreset) beside a CartPole given env's state before every step:
    the copies that go on move as CartPole's, the finished ones report CartPole's
    reward and flags and restart in [-0.05, 0.05]^4 at t = 0.
    Returns the restart states."""
    ref = CartPole(env.num_envs, device="cpu", seed=5)
    env.reset()
    g, starts = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        action = torch.randint(0, 2, (env.num_envs,), generator=g)
        ref.state, ref.t, ref.done, ref._started = env.state, env.t, env.done, True
        (_, r1, te1, tr1), (o2, r2, te2, tr2) = ref.step(action), env.step(action)
        assert torch.equal(r1, r2) and torch.equal(te1, te2) and torch.equal(tr1, tr2)
        over = te2 | tr2
        gap = (
            (env.state[~over] - ref.state[~over]).abs().max().item()
            if (~over).any()
            else 0.0
        )
        assert (
            gap < 1e-9
            and not env.done.any()
            and (env.t[over] == 0).all()
            and (env.t[~over] == ref.t[~over]).all()
        )
        assert torch.equal(o2, env.state.float())
        starts.append(env.state[over])
    starts = torch.cat(starts)
    assert len(starts) > 100 and starts.abs().max() <= 0.05
    return starts


def test_fused_autoreset_restarts_finished_copies_in_the_step():
    eager = autoreset_lockstep(
        FusedCartPole(64, device="cpu", seed=5, compile=False, autoreset=True)
    )
    compiled = autoreset_lockstep(
        FusedCartPole(64, device="cpu", seed=5, autoreset=True)
    )
    assert torch.equal(
        eager, compiled
    )  # the restart states are computed from integers: identical
    assert not torch.equal(
        eager[:100],
        autoreset_lockstep(
            FusedCartPole(64, device="cpu", seed=6, compile=False, autoreset=True)
        )[:100],
    )


def test_fused_autoreset_truncates_at_500_and_restarts():
    env = FusedCartPole(3, device="cpu", compile=False, autoreset=True)
    env.reset()
    env.t = torch.tensor([498, 499, 10])
    _, reward, terminated, truncated = env.step(torch.zeros(3, dtype=torch.long))
    assert truncated.tolist() == [False, True, False] and reward.tolist() == [
        1.0,
        1.0,
        1.0,
    ]
    assert env.t.tolist() == [499, 0, 11] and not env.done.any()
    _, reward, _, truncated = env.step(
        torch.zeros(3, dtype=torch.long)
    )  # the restarted copy runs again
    assert (
        reward.tolist() == [1.0, 1.0, 1.0]
        and truncated.tolist() == [True, False, False]
        and env.t.tolist() == [0, 1, 12]
    )


def test_fused_autoreset_bad_action_raises_and_changes_nothing():
    env = FusedCartPole(8, device="cpu", autoreset=True)
    env.reset()
    before, t = env.state, env.t
    with pytest.raises(ValueError, match=r"action must lie in \[0, 2\)"):
        env.step(torch.tensor([0, 1, 0, 1, -1, 0, 0, 0]))
    assert torch.equal(env.state, before) and torch.equal(env.t, t)


def test_counter_uniform_is_a_uniform_bijection_of_each_block():
    counter = torch.arange(2**20)
    u = counter_uniform(counter, 7)
    assert u.dtype == torch.float64 and u.min() >= 0 and u.max() < 1
    assert len(torch.unique(u)) == len(
        u
    )  # distinct counters in a block of 2**32 give distinct numbers
    assert (
        abs(u.mean().item() - 0.5) < 3 * (1 / 12 / len(u)) ** 0.5
        and abs(u.var().item() - 1 / 12) < 1e-3
    )
    counts = torch.bincount((u * 64).long(), minlength=64).double()
    chi2 = ((counts - len(u) / 64) ** 2 / (len(u) / 64)).sum().item()
    assert (
        chi2 < 103
    )  # the 0.1% quantile of chi-squared with 63 degrees of freedom is 103.4
    lag = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[
        0, 1
    ].item()  # consecutive counters are uncorrelated
    assert abs(lag) < 4 / len(u) ** 0.5
    assert not torch.equal(u, counter_uniform(counter, 8))
    high = counter_uniform(
        counter + 2**32, 7
    )  # the next block of 2**32 counters: another stream
    assert (high != u).float().mean() > 0.999


def test_compile_kernel_gives_the_eager_numbers():
    counter = torch.arange(4096) * 1_000_003
    halves = (torch.tensor(12345), torch.tensor(0))  # the seed 12345, as kernels get it
    assert torch.equal(
        compile_kernel(_counter_uniform, counter, *halves)(counter, *halves),
        counter_uniform(counter, 12345),
    )


@pytest.mark.parametrize("autoreset", [False, True])
def test_fused_rollout_is_step_after_step(autoreset):
    """rollout(actions [K, N]) gives what K calls of step give, bit for bit (eager: the
    compiled rollout is the benchmarks'); without autoreset that is CartPole's."""
    make = dict(device="cpu", seed=5, compile=False, autoreset=autoreset)
    stepped, rolled = FusedCartPole(64, **make), FusedCartPole(64, **make)
    stepped.reset(), rolled.reset()
    g = torch.Generator().manual_seed(0)
    actions = torch.randint(0, 2, (300, 64), generator=g)
    outs = [stepped.step(a) for a in actions]
    parts = rolled.rollout(actions[:200]), rolled.rollout(actions[200:])  # two calls
    for k, (first, second) in enumerate(zip(*parts)):
        assert torch.equal(
            torch.stack([o[k] for o in outs]), torch.cat([first, second])
        )
    assert torch.equal(stepped.state, rolled.state)
    assert torch.equal(stepped.t, rolled.t) and torch.equal(stepped.done, rolled.done)
    if not autoreset:  # chapter 3's CartPole, stepped through the same actions
        ref = CartPole(64, device="cpu", seed=5)
        ref.reset()
        for a in actions:
            ref.step(a)
        assert torch.equal(ref.state, rolled.state) and torch.equal(ref.t, rolled.t)


def test_fused_rollout_bad_action_raises_and_changes_nothing():
    env = FusedCartPole(4, device="cpu", compile=False, autoreset=True)
    env.reset()
    before, t = env.state, env.t
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 2\)"):
        env.rollout(torch.tensor([[0, 1, 0, 1], [0, 2, 0, 0]]))
    assert torch.equal(env.state, before) and torch.equal(env.t, t)


def test_fused_seeds_differing_in_high_bits_give_other_restart_streams():
    counter = torch.arange(4096)
    low = counter_uniform(counter, 2**40)
    assert (low != counter_uniform(counter, 2**40 + 2**32)).float().mean() > 0.999
    env = FusedCartPole(4, device="cpu", seed=2**40, compile=False, autoreset=True)
    assert env._seed.tolist() == [0, 2**8]
    with pytest.raises(ValueError, match="seed"):
        FusedCartPole(4, device="cpu", seed=2**64, compile=False)


# ---------------------------------------------------------------- generation
def small_policy(answer_len, seed=0):
    torch.manual_seed(seed)
    return TransformerPolicy(VOCAB_SIZE, PROMPT_LEN + answer_len, device="cpu")


@pytest.mark.parametrize(
    "answer_len, task",
    [(1, {}), (3, {}), (MAX_ANSWER_LEN, {}), (MAX_ANSWER_LEN, {"group_size": 4})]
    + [(MAX_ANSWER_LEN, {"stop": True}), (4, {"group_size": 2, "stop": True})],
)
def test_rollout_tokens_is_rollout(answer_len, task):
    policy = small_policy(answer_len)
    out = []
    for sample in (rollout, rollout_tokens):
        torch.manual_seed(7)
        env = TokenTask(256, answer_len=answer_len, device="cpu", seed=3, **task)
        out.append((sample(env, policy), torch.get_rng_state()))
    (a, rng_a), (b, rng_b) = out
    assert torch.equal(a.mask, b.mask) and torch.equal(rng_a, rng_b)
    assert torch.equal(a.actions[a.mask], b.actions[b.mask])
    for f in ("obs", "rewards", "terminated", "truncated"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert torch.allclose(a.log_probs[a.mask], b.log_probs[b.mask], atol=1e-5)
    assert b.group_size == task.get("group_size", 1)
    if task.get("stop"):
        assert (b.lengths < answer_len).any()  # some answers stopped at EOS


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_generate_log_probs_are_the_uncached_policy_at_temperature(temperature):
    policy = small_policy(MAX_ANSWER_LEN)
    prompts = TokenTask(32, answer_len=MAX_ANSWER_LEN, device="cpu").reset()
    tokens, log_probs, mask = generate(policy, prompts, MAX_ANSWER_LEN, temperature)
    prefix, L = torch.cat([prompts, tokens], 1), prompts.shape[1]
    for t in range(MAX_ANSWER_LEN):
        dist = policy(prefix[:, t : L + t], temperature=temperature)
        assert torch.allclose(dist.log_prob(tokens[:, t]), log_probs[:, t], atol=1e-5)
    assert mask.all()


def test_generate_samples_at_its_temperature():
    policy = small_policy(1)
    with torch.no_grad():
        policy.head.weight.mul_(8)  # sharper logits: the temperature matters
    prompts = torch.tensor([[3, 10]]).repeat(20_000, 1)
    for tau, other in ((0.5, 2.0), (2.0, 0.5)):
        torch.manual_seed(0)
        drawn = generate(policy, prompts, 1, temperature=tau)[0][:, 0]
        freq = torch.bincount(drawn, minlength=policy.n_actions) / len(drawn)
        p = policy(prompts[:1], temperature=tau).probs[0]
        q = policy(prompts[:1], temperature=other).probs[0]
        assert 0.5 * (freq - p).abs().sum() < 0.02
        assert 0.5 * (freq - q).abs().sum() > 0.1


def test_generate_stops_at_stop_id_and_masks_the_rest():
    policy = small_policy(MAX_ANSWER_LEN)
    prompts = torch.tensor([[3, 10]]).repeat(256, 1)
    torch.manual_seed(0)
    tokens, log_probs, mask = generate(policy, prompts, MAX_ANSWER_LEN, stop_id=11)
    stopped = (tokens == 11).cumsum(1)
    after = torch.cat([torch.zeros_like(stopped[:, :1]), stopped[:, :-1]], 1) > 0
    assert torch.equal(mask, ~after) and (~mask).any()
    assert (tokens[~mask] == policy.pad_id).all() and (log_probs[~mask] == 0).all()


def test_generate_rejects_bad_input():
    policy = small_policy(2)
    prompts = torch.full((4, PROMPT_LEN), 10)
    with pytest.raises(ValueError, match="temperature"):
        generate(policy, prompts, 2, temperature=0)
    with pytest.raises(ValueError, match="temperature"):
        generate(policy, prompts, 2, temperature=1e-45)
    with pytest.raises(ValueError, match="n_tokens"):
        generate(policy, prompts, 0)
    with pytest.raises(ValueError, match="prompts"):
        generate(policy, prompts[0], 2)
    with pytest.raises(ValueError, match="tokens must lie"):
        generate(policy, torch.full((4, 2), 13), 2)
    with pytest.raises(ValueError, match="stop_id"):
        generate(policy, prompts, 2, stop_id=12)
    generate(policy, prompts, 3)  # the last token is sampled, never read
    with pytest.raises(ValueError, match=f"block_size {PROMPT_LEN + 2}"):
        generate(policy, prompts, 4)
    with pytest.raises(TypeError, match="TransformerPolicy"):
        generate(torch.nn.Linear(2, 2), prompts, 2)
    with pytest.raises(TypeError, match="TokenTask"):
        rollout_tokens(CartPole(2, device="cpu"), policy)


def test_rollout_tokens_reads_nothing_back_from_the_device():
    policy, task = small_policy(3), TokenTask(16, answer_len=3, device="cpu")
    with no_host_reads() as allowed:
        rollout_tokens(task, policy)
    assert set(allowed) <= {("plainrl.checks", "check")}
    stop = TokenTask(16, answer_len=3, device="cpu", stop=True)
    why = "trims to the longest answer, once per rollout, as rollout does"
    with no_host_reads({**ALLOWED, ("plainrl.generate", "replay"): why}):
        rollout_tokens(stop, policy)


# ---------------------------------------------------------------- checkpoints
def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"update": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_write(path) as f:
            f.write(b"half a checkpoint")
            raise RuntimeError("crash")
    assert load_checkpoint(path)["update"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    old = os.umask(0o022)
    try:
        save_checkpoint({"update": 2}, path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # the normal permissions, not 0600


def test_load_checkpoint_refuses_bad_files_with_a_message(tmp_path):
    torch.save({"budget": Budget()}, tmp_path / "evil.pt")  # a pickled object
    with pytest.raises(CheckpointError, match="other than tensors") as error:
        load_checkpoint(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(error.value)
    save_checkpoint({"a": 1}, tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:50])
    (tmp_path / "empty.pt").write_bytes(b"")
    cases = {"missing.pt": "no checkpoint", "cut.pt": "cut short", "empty.pt": "empty"}
    for name, message in cases.items():
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / name)
    with pytest.raises(CheckpointError, match="lacks policy"):
        load_checkpoint(tmp_path / "ok.pt", keys=("policy",))


# ---------------------------------------------------------------- runs, hooks
TASKS = {
    "tabular": {},
    "cartpole": {"num_envs": 16},
    "tokens": {"num_envs": 32, "answer_len": 2},
}


def trainer(name, run_dir=None, updates=8, policy=None, hooks=(), **options):
    "A small run of task `name`, rtg+baseline weights, checkpointed into run_dir."
    cfg = config(name, **TASKS[name], seed=3, device="cpu")
    budget = Budget(max_updates=updates, stop_when_solved=False)
    hooks = list(hooks)
    if run_dir is not None:
        hooks.append(Checkpoints(run_dir, every=3, **options))
    if name == "tokens" and policy is None:
        policy = small_policy(2)  # an untrained model instead of the base model
    sample = rollout_tokens if name == "tokens" else rollout
    return Trainer(cfg.task, policy, cfg.algo, budget, seed=3, device="cpu",
                   sample=sample, weigh=replace(cfg.weights), hooks=hooks)  # fmt: skip


@pytest.mark.parametrize("name", TASKS)
def test_resume_continues_exactly(name, tmp_path):
    full = trainer(name, tmp_path / "full").fit()
    trainer(name, tmp_path / "half", updates=4).fit()
    saved = load_checkpoint(tmp_path / "half" / "checkpoint.pt")
    assert saved["state"]["update"] == 4  # written after the last update too
    resumed = trainer(name, tmp_path / "half", resume=True).fit()
    assert same(params(full.policy), params(resumed.policy))
    assert strip(full.state.rows) == strip(resumed.state.rows)
    value = resumed.weigh.state_dict()["value"]
    assert torch.equal(full.weigh.state_dict()["value"], value)
    metrics = (tmp_path / "half" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 1 + 8


def test_resume_refuses_other_settings_and_bad_checkpoints(tmp_path):
    trainer("tabular", tmp_path, updates=2).fit()
    run = trainer("tabular", tmp_path, resume=True)
    run.algo = replace(run.algo, lr=0.1)
    with pytest.raises(CheckpointError, match=r"algo.lr=0\.3 there, 0\.1 here"):
        run.fit()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        trainer("tabular", tmp_path / "new", resume=True).fit()
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="cut short"):
        trainer("tabular", tmp_path, resume=True).fit()


def test_resume_refuses_a_switch_of_compute_dtype(tmp_path):
    trainer("tokens", tmp_path, updates=1).fit()
    bf16 = trainer("tokens", tmp_path, updates=2, resume=True, hooks=[Autocast()])
    with pytest.raises(CheckpointError, match="compute_dtype='float32' there"):
        bf16.fit()


def test_run_dir_is_refused_when_taken_locked_or_unwritable(tmp_path):
    trainer("tabular", tmp_path / "a", updates=1).fit()
    with pytest.raises(RunDirError, match="already holds a run"):
        trainer("tabular", tmp_path / "a", updates=1).fit()
    trainer("tabular", tmp_path / "a", updates=2, overwrite=True).fit()
    rows = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 2
    holder = trainer("tabular", tmp_path / "b", updates=1)
    hook = holder.hooks[-1]
    hook.begin(holder)  # another "process" holds the lock
    try:
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
            trainer("tabular", tmp_path / "b", updates=1).fit()
    finally:
        hook.end(holder)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        trainer("tabular", tmp_path / "file", updates=1).fit()
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        with pytest.raises(RunDirError, match="cannot write"):
            trainer("tabular", tmp_path / "ro", updates=1).fit()
    with pytest.raises(ValueError, match="run_dir"):
        Checkpoints("")


def test_run_dir_check_happens_before_training(tmp_path, monkeypatch):
    import plainrl.runs

    calls = []
    monkeypatch.setattr(plainrl.runs, "atomic_write", _failing(calls))
    run = trainer("tabular", tmp_path / "c", updates=1)
    with pytest.raises(RunDirError, match="cannot write"):
        run.fit()
    assert run.state.update == 0 and calls == [1]


def _failing(calls):
    def atomic_write(path, mode="wb"):
        calls.append(1)
        raise PermissionError(13, "Permission denied")

    return atomic_write


def test_stale_temporary_files_are_removed_on_start(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = tmp_path / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half")
    trainer("tabular", tmp_path, updates=1).fit()
    assert not stale.exists()


def test_nan_stops_and_keeps_the_last_checkpoint(tmp_path):
    calls = []

    def poisoned(log_probs, weights, batch):  # a NaN loss at update 5
        calls.append(batch)
        loss = reinforce_loss(log_probs, weights)
        return loss * math.nan if len(calls) == 5 else loss

    run = trainer("cartpole", tmp_path, updates=20)
    run.loss = poisoned
    with pytest.raises(FloatingPointError, match="at update 5"):
        run.fit()
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["state"]["update"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["policy"].values())


class Kill:
    "Hook: this process sends itself `signum` after update `at`."

    def __init__(self, at, signum):
        self.at, self.signum = at, signum

    def after_update(self, trainer, row):
        if trainer.state.update == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_and_resume_is_exact(signum, tmp_path):
    before = signal.getsignal(signum)
    full = trainer("cartpole", tmp_path / "full").fit()
    run = trainer("cartpole", tmp_path / "cut", hooks=[Kill(4, signum)])
    with pytest.raises(Interrupted, match=f"{signal.Signals(signum).name}: stopped"):
        run.fit()
    assert signal.getsignal(signum) is before  # the handler is put back
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["state"]["update"] == 4
    resumed = trainer("cartpole", tmp_path / "cut", resume=True).fit()
    assert same(params(full.policy), params(resumed.policy))
    assert strip(full.state.rows) == strip(resumed.state.rows)


# ---------------------------------------------------------------- bf16, compile, clip
def test_bf16_computes_in_bf16_end_to_end_on_cpu():
    run = trainer("tokens", hooks=[Autocast()], updates=2)
    seen = []

    def record(module, inputs, output):
        seen.append((type(module).__name__, output.dtype, torch.is_grad_enabled()))

    policy = run.policy
    for module in policy.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(record)
    run.fit()
    sampling = [dtype for _, dtype, grad in seen if not grad]
    training = [dtype for _, dtype, grad in seen if grad]
    assert sampling and training  # both paths ran through the layers
    assert set(sampling) == set(training) == {torch.bfloat16}
    tokens = torch.tensor([[3, 10]])
    assert policy.logits(tokens).dtype == torch.float32  # the logits in float32
    assert all(math.isfinite(r["loss"]) for r in run.state.rows)
    with pytest.raises(ValueError, match="amp needs a policy with a compute_dtype"):
        trainer("cartpole", hooks=[Autocast()], updates=1).fit()


def test_compiled_cartpole_trains_as_the_eager_one():
    eager = trainer("cartpole", updates=5).fit()
    compiled = trainer("cartpole", updates=5, hooks=[Compiled()])
    compiled.fit()
    assert isinstance(compiled.env, FusedCartPole)
    for a, b in zip(eager.state.rows, compiled.state.rows):
        assert a["env_steps"] == b["env_steps"] and a["return"] == b["return"]
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4)
    pairs = zip(params(eager.policy), params(compiled.policy))
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in pairs)
    with pytest.raises(ValueError, match="compile applies to CartPole"):
        trainer("tabular", updates=1, hooks=[Compiled()]).fit()


@pytest.mark.parametrize("max_norm", [0.01, 0.1])
def test_clipping_bounds_the_gradient_norm(max_norm):
    torch.manual_seed(0)
    env = CartPole(16, device="cpu", seed=0)
    policy = MLPPolicy(4, 2, hidden=16, device="cpu")
    traj = rollout(env, policy)
    weights = Weights(*VARIANTS["rtg"])(traj)
    before = params(policy)
    sgd = torch.optim.SGD(policy.parameters(), lr=1.0)
    algo = Algorithm(lr=1.0, max_grad_norm=max_norm)
    loss, norm = update(policy, sgd, traj, weights, algo)
    step = torch.cat([(b - a).flatten() for a, b in zip(params(policy), before)])
    assert norm > 10 * max_norm  # the raw gradient is much larger: clipping acted
    assert step.norm() <= max_norm * (1 + 1e-5)  # SGD, lr 1: the step is the gradient
    assert step.norm() >= max_norm * (1 - 1e-3)


# ---------------------------------------------------------------- part two's loss
def test_clipped_loss_has_reinforces_gradient_at_ratio_one():
    torch.manual_seed(0)
    env = CartPole(32, device="cpu", seed=0)
    policy = MLPPolicy(4, 2, hidden=16, device="cpu")
    traj = rollout(env, policy)
    weights = Weights(*VARIANTS["rtg"])(traj)
    grads = []
    for loss in (reinforce_loss, clipped_loss):
        policy.zero_grad()
        log_probs = policy(traj.obs).log_prob(traj.actions)
        torch.where(traj.mask, loss(log_probs, weights, traj), 0).sum(
            1
        ).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters()]))
    assert grads[0].abs().max() > 0 and torch.allclose(*grads, atol=1e-6)
    ratio = torch.full((1, 3), 2.0).log()  # ρ = 2: clipped at 1.2 where w > 0
    batch = type("B", (), {"log_probs": torch.zeros(1, 3)})
    w = torch.tensor([[1.0, -1.0, 0.0]])
    assert clipped_loss(ratio, w, batch).tolist() == [[-1.2000000476837158, 2.0, -0.0]]


def test_clipped_loss_trains_with_epochs_and_minibatches():
    run = trainer("cartpole", updates=3)
    run.loss, run.algo = clipped_loss, replace(run.algo, epochs=2, minibatches=4)
    run.fit()
    assert len(run.state.rows) == 3 and all(
        math.isfinite(r["loss"]) for r in run.state.rows
    )
