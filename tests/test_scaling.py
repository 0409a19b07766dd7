"""Chapter 8: the fused CartPole, the key-value cache, checkpoints and resume, the NaN stop, the engine and its CLI."""
import copy
import csv
import math
from dataclasses import replace

import pytest
import torch

from plainrl.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from plainrl.envs.cartpole import CartPole
from plainrl.envs.fused import FusedCartPole, compile_kernel, counter_uniform
from plainrl.envs.tokens import MAX_ANSWER_LEN, PROMPT_LEN, VOCAB_SIZE, TokenTask
from plainrl.generate import KVCache, generate, rollout_tokens
from plainrl.policy import TransformerPolicy
from plainrl.reinforce import CONFIGS, train
from plainrl.train import fit, main
from plainrl.trajectory import rollout
from test_no_sync import no_host_reads

FIELDS = ("obs", "actions", "rewards", "mask")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    "The networks are tiny: one thread is fastest, and two contend with the other pytest worker."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def params(policy): return [p.detach().clone() for p in policy.parameters()]
def same(a, b): return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


# ---------------------------------------------------------------- FusedCartPole
@pytest.fixture(scope="module")
def compiled():
    "One compiled FusedCartPole for the module (compilation takes seconds; it is cached per shape)."
    return FusedCartPole(64, device="cpu", seed=5)


def lockstep(env, steps=150, seed=0):
    "Step CartPole and `env` (same seed, same random actions); the largest state gap, and whether all else matched."
    ref = CartPole(env.num_envs, device="cpu", seed=5)
    assert torch.equal(ref.reset(), env.reset())  # the same s_0 for the same seed
    g, gap = torch.Generator().manual_seed(seed), 0.0
    for _ in range(steps):
        action = torch.randint(0, 2, (env.num_envs,), generator=g)
        (o1, r1, te1, tr1), (o2, r2, te2, tr2) = ref.step(action), env.step(action)
        assert torch.allclose(o1, o2, atol=1e-6) and torch.equal(r1, r2) and torch.equal(te1, te2) and torch.equal(tr1, tr2)
        gap = max(gap, (ref.state - env.state).abs().max().item())
    assert torch.equal(ref.t, env.t) and torch.equal(ref.done, env.done)
    return gap


def test_fused_eager_equals_cartpole_exactly():
    assert lockstep(FusedCartPole(64, device="cpu", seed=5, compile=False)) == 0.0


def test_fused_compiled_matches_cartpole(compiled):
    assert lockstep(compiled) < 1e-9  # the compiled sin/cos may round differently in the last bit


def test_fused_truncates_at_500_like_cartpole():
    env = FusedCartPole(3, device="cpu", compile=False)
    env.reset()
    env.t = torch.tensor([498, 499, 10])
    _, reward, terminated, truncated = env.step(torch.zeros(3, dtype=torch.long))
    assert truncated.tolist() == [False, True, False] and reward.tolist() == [1.0, 1.0, 1.0]
    assert env.done.tolist() == [False, True, False] and env.t.tolist() == [499, 500, 11]
    _, reward, _, truncated = env.step(torch.zeros(3, dtype=torch.long))  # the finished copy is frozen
    assert reward.tolist() == [1.0, 0.0, 1.0] and truncated.tolist() == [True, False, False]


def test_fused_bad_action_raises_and_changes_nothing(compiled):
    compiled.reset()
    before = compiled.state
    with pytest.raises(ValueError, match=r"action must lie in \[0, 2\)"): compiled.step(torch.full((64,), 2))
    with pytest.raises(ValueError, match=r"expected \[64\]"): compiled.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"): compiled.step(torch.zeros(64))
    assert torch.equal(compiled.state, before)
    with pytest.raises(RuntimeError, match="reset"): FusedCartPole(2, device="cpu", compile=False).step(torch.zeros(2, dtype=torch.long))


def test_fused_partial_reset_restarts_only_the_masked_copies(compiled):
    compiled.reset()
    for _ in range(30): compiled.step(torch.ones(64, dtype=torch.long))  # pushed right: all have fallen
    before, mask = compiled.state, torch.arange(64) % 3 == 0
    obs = compiled.reset(mask)
    state = compiled.state
    assert torch.equal(state[~mask], before[~mask]) and state[mask].abs().max() <= 0.05
    assert torch.equal(compiled.done, ~mask) and (compiled.t[mask] == 0).all() and torch.equal(obs, state.float())
    with pytest.raises(ValueError, match="bool tensor of shape"): compiled.reset(torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("autoreset", [False, True])
def test_fused_step_reads_nothing_back_from_the_device(compiled, autoreset):
    env = FusedCartPole(64, device="cpu", seed=5, autoreset=True) if autoreset else compiled
    env.reset()
    with no_host_reads() as allowed:
        for _ in range(30): env.step(torch.zeros(64, dtype=torch.long))  # pushed left: copies fall and restart
    assert set(allowed) <= {("plainrl.policy", "check")}


def twin(env):
    "A CartPole in `env`'s state, just reset, to step beside it."
    env.reset()
    ref = CartPole(env.num_envs, device="cpu", seed=5)
    ref.reset()
    ref.state = env.state
    return ref


def step_both(ref, env, action):
    "Step CartPole `ref` and `env` with the same actions: the same observations, rewards and flags."
    o1, o2 = ref.step(action.long()), env.step(action)
    assert torch.allclose(o1[0], o2[0], atol=1e-6) and all(torch.equal(a, b) for a, b in zip(o1[1:], o2[1:]))


def test_fused_accepts_any_integer_actions_of_the_right_shape(compiled):
    "The compiled kernel checks nothing itself: step must hand it int64, contiguous actions."
    ref = twin(compiled)
    for action in (torch.ones(64, dtype=torch.int32), torch.zeros(64, 2, dtype=torch.long)[:, 1], torch.ones(64, dtype=torch.uint8)):
        step_both(ref, compiled, action)


def test_fused_keeps_its_tensors_in_the_kernels_layout(compiled):
    "The kernel checks no shapes or strides (compile_kernel turns Inductor's asserts off): the setters must."
    ref = twin(compiled)
    strided_t = (torch.arange(128.0, dtype=torch.float64) % 400).view(64, 2)[:, 1]  # views with stride 2; float64,
    strided_done = (torch.arange(128) % 5 == 0).view(64, 2)[:, 0]                   # as the kernel keeps t, so no copy
    ref.t, ref.done = strided_t.long(), strided_done.clone()
    compiled.t, compiled.done = strided_t, strided_done
    for _ in range(20): step_both(ref, compiled, torch.ones(64, dtype=torch.long))
    assert torch.equal(ref.t, compiled.t) and torch.equal(ref.done, compiled.done)
    with pytest.raises(ValueError, match=r"t has shape \[65\]; expected \[64\]"): compiled.t = torch.zeros(65, dtype=torch.long)
    with pytest.raises(ValueError, match=r"done has shape \[1\]; expected \[64\]"): compiled.done = torch.ones(1, dtype=torch.bool)


def autoreset_lockstep(env, steps=300):
    """Step `env` (autoreset) beside a CartPole given env's state before every step: the copies that go on move as
    CartPole's, the finished ones report CartPole's reward and flags and restart in [-0.05, 0.05]^4 at t = 0.
    Returns the restart states."""
    ref = CartPole(env.num_envs, device="cpu", seed=5)
    env.reset()
    g, starts = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        action = torch.randint(0, 2, (env.num_envs,), generator=g)
        ref.state, ref.t, ref.done, ref._started = env.state, env.t, env.done, True
        (o1, r1, te1, tr1), (o2, r2, te2, tr2) = ref.step(action), env.step(action)
        assert torch.equal(r1, r2) and torch.equal(te1, te2) and torch.equal(tr1, tr2)
        over = te2 | tr2
        gap = (env.state[~over] - ref.state[~over]).abs().max().item() if (~over).any() else 0.0
        assert gap < 1e-9 and not env.done.any() and (env.t[over] == 0).all() and (env.t[~over] == ref.t[~over]).all()
        assert torch.equal(o2, env.state.float())
        starts.append(env.state[over])
    starts = torch.cat(starts)
    assert len(starts) > 100 and starts.abs().max() <= 0.05
    return starts


def test_fused_autoreset_restarts_finished_copies_in_the_step():
    eager = autoreset_lockstep(FusedCartPole(64, device="cpu", seed=5, compile=False, autoreset=True))
    compiled = autoreset_lockstep(FusedCartPole(64, device="cpu", seed=5, autoreset=True))
    assert torch.equal(eager, compiled)  # the restart states are computed from integers: identical
    assert not torch.equal(eager[:100], autoreset_lockstep(FusedCartPole(64, device="cpu", seed=6, compile=False, autoreset=True))[:100])


def test_fused_autoreset_truncates_at_500_and_restarts():
    env = FusedCartPole(3, device="cpu", compile=False, autoreset=True)
    env.reset()
    env.t = torch.tensor([498, 499, 10])
    _, reward, terminated, truncated = env.step(torch.zeros(3, dtype=torch.long))
    assert truncated.tolist() == [False, True, False] and reward.tolist() == [1.0, 1.0, 1.0]
    assert env.t.tolist() == [499, 0, 11] and not env.done.any()
    _, reward, _, truncated = env.step(torch.zeros(3, dtype=torch.long))  # the restarted copy runs again
    assert reward.tolist() == [1.0, 1.0, 1.0] and truncated.tolist() == [True, False, False] and env.t.tolist() == [0, 1, 12]


def test_fused_autoreset_bad_action_raises_and_changes_nothing():
    env = FusedCartPole(8, device="cpu", autoreset=True)
    env.reset()
    before, t = env.state, env.t
    with pytest.raises(ValueError, match=r"action must lie in \[0, 2\)"): env.step(torch.tensor([0, 1, 0, 1, -1, 0, 0, 0]))
    assert torch.equal(env.state, before) and torch.equal(env.t, t)


def test_counter_uniform_is_a_uniform_bijection_of_each_block():
    counter = torch.arange(2**20)
    u = counter_uniform(counter, 7)
    assert u.dtype == torch.float64 and u.min() >= 0 and u.max() < 1
    assert len(torch.unique(u)) == len(u)  # distinct counters in a block of 2**32 give distinct numbers
    assert abs(u.mean().item() - 0.5) < 3 * (1 / 12 / len(u)) ** 0.5 and abs(u.var().item() - 1 / 12) < 1e-3
    counts = torch.bincount((u * 64).long(), minlength=64).double()
    chi2 = ((counts - len(u) / 64) ** 2 / (len(u) / 64)).sum().item()
    assert chi2 < 103  # the 0.1% quantile of chi-squared with 63 degrees of freedom is 103.4
    lag = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1].item()  # consecutive counters are uncorrelated
    assert abs(lag) < 4 / len(u) ** 0.5
    assert not torch.equal(u, counter_uniform(counter, 8))
    high = counter_uniform(counter + 2**32, 7)  # the next block of 2**32 counters: another stream
    assert (high != u).float().mean() > 0.999


def test_compile_kernel_gives_the_eager_numbers():
    counter = torch.arange(4096) * 1_000_003
    seed = torch.tensor(12345)
    assert torch.equal(compile_kernel(counter_uniform, counter, seed)(counter, seed), counter_uniform(counter, seed))


# ---------------------------------------------------------------- the key-value cache
def small_policy(answer_len, seed=0):
    torch.manual_seed(seed)
    return TransformerPolicy(VOCAB_SIZE, PROMPT_LEN + answer_len, device="cpu")


@pytest.mark.parametrize("answer_len", [1, 3, MAX_ANSWER_LEN])
def test_rollout_tokens_is_rollout(answer_len):
    policy = small_policy(answer_len)
    torch.manual_seed(7)
    a = rollout(TokenTask(256, answer_len=answer_len, device="cpu", seed=3), policy)
    torch.manual_seed(7)
    b = rollout_tokens(TokenTask(256, answer_len=answer_len, device="cpu", seed=3), policy)
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)
    assert torch.allclose(a.log_probs, b.log_probs, atol=1e-5)


def test_cache_reads_left_padded_prompts_like_the_full_model():
    policy, g = small_policy(8), torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB_SIZE - 1, (32, 9), generator=g)
    pad = torch.arange(9) < torch.randint(0, 5, (32, 1), generator=g)  # 0 to 4 pads on the left
    tokens = tokens.masked_fill(pad, policy.pad_id)
    full = policy.logits(tokens)  # next-token logits at every position
    cache = KVCache(policy, 32, max_len=9)
    assert torch.allclose(cache.read(tokens[:, :5]), full[:, 4], atol=1e-5)  # a padded prompt, then token by token
    for j in range(5, 9): assert torch.allclose(cache.read(tokens[:, j:j + 1]), full[:, j], atol=1e-5)
    with pytest.raises(ValueError, match="max_len 9"): cache.read(tokens[:, :1])


def test_generate_rejects_bad_input():
    policy = small_policy(2)
    prompts = torch.full((4, PROMPT_LEN), 10)
    with pytest.raises(ValueError, match="temperature"): generate(policy, prompts, 2, temperature=0)
    with pytest.raises(ValueError, match="n_tokens"): generate(policy, prompts, 0)
    with pytest.raises(ValueError, match=r"prompts must be a tensor \[B, P\]"): generate(policy, prompts[0], 2)
    generate(policy, prompts, 3)  # the last token is sampled, never read: the block holds prompt + 2
    with pytest.raises(ValueError, match=f"block_size {PROMPT_LEN + 2}"): generate(policy, prompts, 4)
    with pytest.raises(TypeError, match="TransformerPolicy"): KVCache(torch.nn.Linear(2, 2), 4, 4)
    with pytest.raises(TypeError, match="TokenTask"): rollout_tokens(CartPole(2, device="cpu"), policy)


def test_rollout_tokens_reads_nothing_back_from_the_device():
    policy, task = small_policy(3), TokenTask(16, answer_len=3, device="cpu")
    with no_host_reads() as allowed: rollout_tokens(task, policy)
    assert set(allowed) <= {("plainrl.policy", "check")}


# ---------------------------------------------------------------- checkpoints
def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"update": 1, "w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_write(path) as f:
            f.write(b"half a checkpoint")
            raise RuntimeError("crash")
    assert load_checkpoint(path)["update"] == 1 and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_checkpoint_refuses_code(tmp_path):
    torch.save({"config": CONFIGS["tabular"]}, tmp_path / "evil.pt")  # a pickled object, not plain data
    with pytest.raises(Exception, match="[Ww]eights only"): load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"): load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------- the engine
def quick(env, **kw):
    return replace(CONFIGS[env], device="cpu", seed=3, stop_when_solved=False, **kw)


@pytest.mark.parametrize("env, updates", [("tabular", 12), ("cartpole", 6)])
def test_fit_reproduces_train(env, updates):
    cfg = quick(env, max_updates=updates, **({"num_envs": 16} if env == "cartpole" else {}))
    a, b = train(cfg), fit(cfg)
    assert same(params(a.policy), params(b.policy))
    assert [{k: v for k, v in r.items() if k != "wall_s"} for r in a.rows] == \
           [{k: v for k, v in r.items() if k != "wall_s"} for r in b.rows]


@pytest.mark.parametrize("env, kw", [("tabular", {}), ("cartpole", {"num_envs": 16}),
                                     ("tokens", {"num_envs": 32, "answer_len": 2})])
def test_resume_continues_exactly(env, kw, tmp_path):
    cfg = quick(env, max_updates=8, **kw)
    policy = small_policy(2) if env == "tokens" else None  # a small untrained model instead of the base model
    start = lambda: copy.deepcopy(policy)
    full = fit(cfg, tmp_path / "full", checkpoint_every=3, policy=start())
    fit(replace(cfg, max_updates=4), tmp_path / "half", checkpoint_every=3, policy=start())
    assert load_checkpoint(tmp_path / "half" / "checkpoint.pt")["update"] == 4  # written at the end too
    resumed = fit(cfg, tmp_path / "half", resume=True, checkpoint_every=3, policy=start())
    assert same(params(full.policy), params(resumed.policy))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]
    assert strip(full.rows) == strip(resumed.rows)
    with open(tmp_path / "half" / "metrics.csv", newline="") as f: assert len(list(csv.DictReader(f))) == 8


def test_resume_refuses_other_settings(tmp_path):
    fit(quick("tabular", max_updates=2), tmp_path)
    with pytest.raises(ValueError, match=r"lr=0\.3 there, 0\.1 here"): fit(quick("tabular", lr=0.1), tmp_path, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"): fit(quick("tabular"), tmp_path / "new", resume=True)


def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import plainrl.train
    calls, original = [], plainrl.train.pg_weights
    def poisoned(traj, *args):
        calls.append(1)
        weights = original(traj, *args)
        return weights * math.nan if len(calls) == 7 else weights
    monkeypatch.setattr(plainrl.train, "pg_weights", poisoned)
    with pytest.raises(FloatingPointError, match=r"the loss is nan at update 7: .*checkpoint, of update 5, is"):
        fit(quick("tabular", max_updates=20), tmp_path, checkpoint_every=5)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["update"] == 5 and all(torch.isfinite(v).all() for v in ckpt["policy"].values())


def test_bf16_autocast_runs_on_cpu():
    run = fit(quick("tokens", max_updates=2, num_envs=16, answer_len=2), amp="on", policy=small_policy(2))
    assert all(math.isfinite(r["loss"]) for r in run.rows)


def test_fit_rejects_bad_options(tmp_path):
    with pytest.raises(ValueError, match="applies to cartpole"): fit(quick("tabular"), compile=True)
    with pytest.raises(ValueError, match="amp must be"): fit(quick("tabular"), amp="fp8")
    with pytest.raises(ValueError, match="needs the run_dir"): fit(quick("tabular"), resume=True)


# ---------------------------------------------------------------- the command line
def cli(tmp_path, *extra):
    return main(["train", "--env", "tabular", "--device", "cpu", "--run-dir", str(tmp_path), "--no-progress", *extra])


def test_cli_resume(tmp_path, capsys):
    assert cli(tmp_path, "--max-updates", "3", "--full-budget") == 1
    assert cli(tmp_path, "--max-updates", "6", "--full-budget", "--resume") == 1
    assert "after 6 updates" in capsys.readouterr().err
    with open(tmp_path / "metrics.csv", newline="") as f: assert [int(r["update"]) for r in csv.DictReader(f)] == [1, 2, 3, 4, 5, 6]
    assert cli(tmp_path, "--lr", "0.1", "--resume") == 2
    assert "cannot resume" in capsys.readouterr().err
    assert cli(tmp_path / "nothing", "--resume") == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_cli_nan_exit_status(tmp_path, capsys, monkeypatch):
    import plainrl.train
    monkeypatch.setattr(plainrl.train, "pg_weights", lambda traj, *a: torch.full(traj.rewards.shape, math.inf))
    assert cli(tmp_path) == 3
    assert "at update 1: training stopped there; no checkpoint was written" in capsys.readouterr().err


def test_cli_help_explains_itself(capsys):
    with pytest.raises(SystemExit) as exit: main(["train", "--help"])
    out = capsys.readouterr().out
    assert exit.value.code == 0
    for text in ("--resume", "--checkpoint-every", "--compile", "--amp", "torchrun --nproc_per_node", "exit status"):
        assert text in out
