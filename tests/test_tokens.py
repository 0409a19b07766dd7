import pytest
import torch

from plainrl.envs import tokens
from plainrl.envs.tokens import PAD, PROMPT_LEN, TokenTask, base_model, decode, encode_prompts, verify


def test_verify_rewards_sums_ending_in_the_target_and_rejects_format_errors():
    targets = torch.tensor([7, 7, 7, 7, 0, 0, 8])
    answers = [[4, 3], [9, 8], [4, 2], [7, 10], [0, 0], [5, 5], [9, 9]]
    reward = verify(targets, torch.tensor(answers))
    assert reward.dtype == torch.float32 and reward.tolist() == [1, 1, 0, 0, 1, 1, 1]
    assert verify(torch.tensor([0, 0]), torch.tensor([[10, 0, 0], [PAD, 9, 1]])).tolist() == [0, 0]
    assert verify(torch.tensor([7, 7]), torch.tensor([[9, 9, 9], [0, 0, 7]])).tolist() == [1, 1]
    assert verify(torch.tensor([3]), torch.tensor([[3]])).tolist() == [1]


@pytest.mark.parametrize("targets, answers, error, message", [
    (torch.tensor([3]), torch.tensor([[1.0, 2.0]]), TypeError, "integer dtype"),
    (torch.tensor([3.0]), torch.tensor([[1, 2]]), TypeError, "targets must be an integer"),
    (torch.tensor([3, 4]), torch.tensor([[1, 2]]), ValueError, r"expected \[1\]"),
    (torch.tensor([3]), torch.tensor([1, 2]), ValueError, r"expected \[N, N\]"),
    (torch.tensor([3]), torch.tensor([[1, 12]]), ValueError, r"\[0, 12\)"),
    (torch.tensor([3]), [[1, 2]], TypeError, "torch.Tensor"),
])
def test_verify_bad_input(targets, answers, error, message):
    with pytest.raises(error, match=message): verify(targets, answers)


def test_decode_drops_padding():
    seq = torch.tensor([[PAD, 3, 10, 4], [7, 10, 3, 4]])
    assert decode(seq) == ["3=4", "7=34"] and decode(seq[1]) == "7=34"
    with pytest.raises(ValueError, match="token ids"): decode(torch.tensor([0, 13]))


@pytest.mark.parametrize("answer_len", [1, 2, 3])
def test_reset_gives_left_padded_prompts_of_uniform_target_digits(answer_len):
    task = TokenTask(4000, answer_len, device="cpu", seed=0)
    obs = task.reset()
    assert obs.shape == (4000, PROMPT_LEN + answer_len - 1) == (task.num_envs, task.obs_len) and obs.dtype == torch.long
    assert (obs[:, :answer_len - 1] == PAD).all() and torch.equal(obs[:, answer_len - 1:], task.prompts)
    assert torch.equal(task.prompts, encode_prompts(task.targets))
    counts = torch.bincount(task.targets, minlength=task.n_targets)
    assert len(counts) == task.n_targets == 10 and counts.min() > 0.8 * 4000 / task.n_targets
    assert (task.vocab_size, task.pad_id, task.n_actions, task.max_steps) == (12, 11, 11, answer_len)


def test_step_appends_tokens_rewards_at_the_end_then_freezes():
    task = TokenTask(3, answer_len=3, device="cpu", seed=1)
    obs = task.reset()
    y = task.targets
    answer = torch.stack([y, torch.full_like(y, 5), torch.full_like(y, 5)], 1)  # y + 5 + 5 ends in y
    answer[1, 2] = (answer[1, 2] + 1) % 10   # wrong last digit
    answer[2, 0] = 10                        # '=' in the answer: a format error
    for t in range(3):
        prev = obs
        obs, reward, terminated, truncated = task.step(answer[:, t])
        assert torch.equal(obs[:, :-1], prev[:, 1:]) and torch.equal(obs[:, -1], answer[:, t])
        assert reward.dtype == torch.float32 and terminated.dtype == truncated.dtype == torch.bool
        assert terminated.tolist() == [t == 2] * 3 and not truncated.any()
        if t < 2: assert not reward.any()
    assert reward.tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(task.sequences, torch.cat([task.prompts, answer], 1))
    for _ in range(2):  # frozen after the end
        frozen, reward, terminated, truncated = task.step(torch.tensor([1, 2, 3]))
        assert torch.equal(frozen, obs) and not reward.any() and not (terminated | truncated).any()
    obs = task.reset()  # a new episode: the prompts again, and steps count from the start
    assert (obs[:, :2] == PAD).all() and not task.step(answer[:, 0])[2].any()


def test_same_seed_same_prompts():
    a, b, c = (TokenTask(64, device="cpu", seed=s) for s in (5, 5, 6))
    ya, yb, yc = a.reset(), b.reset(), c.reset()
    assert torch.equal(ya, yb) and not torch.equal(ya, yc)
    assert not torch.equal(a.reset(), ya)  # the next episode draws new prompts


@pytest.mark.parametrize("action, error, message", [
    (torch.tensor([1, 2]), ValueError, r"expected \[3\]"),
    (torch.tensor([[1, 2, 3]]), ValueError, r"expected \[3\]"),
    (torch.tensor([1.0, 2.0, 3.0]), TypeError, "integer dtype"),
    (torch.tensor([True, False, True]), TypeError, "integer dtype"),
    (torch.tensor([1, 2, PAD]), ValueError, "padding id 11 is never an action"),
    (torch.tensor([1, 2, -1]), ValueError, r"\[0, 11\)"),
    ([1, 2, 3], TypeError, "torch.Tensor"),
])
def test_step_bad_action(action, error, message):
    task = TokenTask(3, device="cpu")
    task.reset()
    with pytest.raises(error, match=message): task.step(action)


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="reset"): TokenTask(2, device="cpu").step(torch.tensor([1, 2]))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(num_envs=0), ValueError, "num_envs=0"),
    (dict(num_envs=2.0), TypeError, "num_envs must be an int"),
    (dict(num_envs=2, answer_len=0), ValueError, "answer_len=0"),
    (dict(num_envs=2, answer_len=9), ValueError, "answer_len=9"),
    (dict(num_envs=2, answer_len="2"), TypeError, "answer_len must be an int"),
    (dict(num_envs=2, device="gpu"), ValueError, "not a device"),
])
def test_task_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message): TokenTask(**kwargs)


def test_no_host_sync_in_reset_and_step(monkeypatch):
    def sync(*args, **kwargs): raise AssertionError("host sync in reset/step")
    monkeypatch.setattr(tokens, "check", lambda ok, message: None)  # check() itself is sync-free off the CPU
    task = TokenTask(4, device="cpu")
    for name in ["item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__"]:
        monkeypatch.setattr(torch.Tensor, name, sync)
    task.reset()
    for _ in range(task.max_steps + 1): task.step(torch.zeros(4, dtype=torch.long))


def test_base_model_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = (base_model(2, steps=3, seed=s, device="cpu") for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert (a.vocab_size, a.pad_id, a.block_size) == (12, PAD, PROMPT_LEN + 2)


def test_base_model_knows_the_format_not_the_rule():
    policy = base_model(2, seed=0, device="cpu")
    task = TokenTask(4096, 2, device="cpu", seed=3)
    torch.manual_seed(0)
    obs = task.reset()
    with torch.no_grad():
        for _ in range(task.max_steps): obs, reward, *_ = task.step(policy(obs).sample())
    answers = task.sequences[:, PROMPT_LEN:]
    assert (answers < 10).all(-1).float().mean() > 0.99
    assert abs(reward.mean().item() - 0.1) < 0.02  # chance: one last digit in ten completes a correct answer


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(answer_len=0), ValueError, "answer_len=0"),
    (dict(steps=0), ValueError, "steps=0"),
    (dict(batch_size=1.5), TypeError, "batch_size must be an int"),
    (dict(lr=0.0), ValueError, "lr must be > 0"),
])
def test_base_model_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message): base_model(**kwargs)
