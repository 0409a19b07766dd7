"""Chapter 3: the token task (verifier, EOS, groups) and plainrl.pretrain.base_model."""

import math

import pytest
import torch
from conftest import no_host_reads

from plainrl.envs import tokens
from plainrl.envs.tokens import (
    CHARS,
    EOS,
    EQUALS,
    PAD,
    PROMPT_LEN,
    VOCAB_SIZE,
    TokenTask,
    decode,
    encode_prompts,
    verify,
)
from plainrl.pretrain import base_model

META = torch.device("meta")


def test_vocabulary():
    assert (EQUALS, EOS, PAD, VOCAB_SIZE) == (10, 11, 12, 13) and CHARS[EOS] == "."
    assert len(CHARS) == VOCAB_SIZE - 1  # every token but PAD prints
    task = TokenTask(2, device="cpu")
    assert (task.vocab_size, task.pad_id, task.eos_id, task.n_actions) == (
        13,
        12,
        11,
        12,
    )


def test_verify_rewards_sums_ending_in_the_target_and_rejects_format_errors():
    targets = torch.tensor([7, 7, 7, 7, 0, 0, 8, 7])
    answers = [[4, 3], [9, 8], [4, 2], [7, 10], [0, 0], [5, 5], [9, 9], [7, EOS]]
    reward = verify(targets, torch.tensor(answers))
    assert reward.dtype == torch.float32 and reward.tolist() == [1, 1, 0, 0, 1, 1, 1, 0]
    assert verify(
        torch.tensor([0, 0]), torch.tensor([[10, 0, 0], [PAD, 9, 1]])
    ).tolist() == [0, 0]
    assert verify(
        torch.tensor([7, 7]), torch.tensor([[9, 9, 9], [0, 0, 7]])
    ).tolist() == [1, 1]
    assert verify(torch.tensor([3]), torch.tensor([[3]])).tolist() == [1]
    assert verify(
        torch.tensor([3]), torch.tensor([[3]], dtype=torch.int32)
    ).tolist() == [1]


@pytest.mark.parametrize(
    "target, answer, reward",
    [
        (7, [4, 3, EOS], 1),  # stops after two digits
        (7, [7, EOS, 5], 1),  # what follows the first EOS is ignored
        (7, [7, EOS, EOS], 1),
        (0, [EOS, 0, 0], 0),  # an empty answer scores 0, even for target 0
        (7, [4, 3, 0], 0),  # no EOS: cut off, 0 although 4 + 3 + 0 ends in 7
        (7, [4, EQUALS, EOS], 0),  # '=' before EOS: a format error
        (7, [4, PAD, 3, EOS], 0),  # padding before EOS too
        (9, [9, 9, 9, EOS], 0),  # 27 does not end in 9
        (7, [9, 9, 9, EOS], 1),
    ],
)
def test_verify_with_stop_reads_the_answer_up_to_eos(target, answer, reward):
    answers = torch.tensor([answer])
    assert verify(torch.tensor([target]), answers, stop=True).tolist() == [reward]
    if EOS in answer:  # stop=False: EOS is a format error
        assert verify(torch.tensor([target]), answers).tolist() == [0]
    task = TokenTask(1, answer_len=len(answer), device="cpu", stop=True)
    task.targets = torch.tensor([target])
    assert task.score(answers).tolist() == [reward]


TARGET = torch.tensor([3])
ANSWER = torch.tensor([[1, 2]])


@pytest.mark.parametrize(
    "targets, answers, kwargs, error, message",
    [
        (TARGET, ANSWER.float(), {}, TypeError, "answers must have an integer dtype"),
        (TARGET, ANSWER.bool(), {}, TypeError, "answers must have an integer dtype"),
        (TARGET, ANSWER.to(torch.uint8), {}, TypeError, "answers must have an integer"),
        (
            TARGET,
            ANSWER.to(torch.complex64),
            {},
            TypeError,
            "answers must have an integer",
        ),
        (TARGET, ANSWER.tolist(), {}, TypeError, "answers must be a torch.Tensor"),
        (TARGET, ANSWER[0], {}, ValueError, r"answers has shape \[2\]"),
        (TARGET, ANSWER[:, :0], {}, ValueError, "answers is empty"),
        (TARGET[:0], ANSWER[:0], {}, ValueError, "answers is empty"),
        (TARGET, ANSWER + 12, {}, ValueError, r"answers must hold ids in \[0, 13\)"),
        (TARGET, ANSWER - 2, {}, ValueError, r"answers must hold ids in \[0, 13\)"),
        (TARGET, ANSWER.to(META), {}, ValueError, "answers is a meta tensor"),
        (TARGET.float(), ANSWER, {}, TypeError, "targets must have an integer dtype"),
        (TARGET.bool(), ANSWER, {}, TypeError, "targets must have an integer dtype"),
        (TARGET.to(torch.uint8), ANSWER, {}, TypeError, "targets must have an integer"),
        ([3], ANSWER, {}, TypeError, "targets must be a torch.Tensor"),
        (torch.tensor([3, 4]), ANSWER, {}, ValueError, r"targets has shape \[2\]"),
        (torch.tensor([[3]]), ANSWER, {}, ValueError, r"targets has shape \[1, 1\]"),
        (TARGET + 7, ANSWER, {}, ValueError, r"targets must lie in \[0, 10\)"),
        (TARGET - 4, ANSWER, {}, ValueError, r"targets must lie in \[0, 10\)"),
        (TARGET.to(META), ANSWER, {}, ValueError, "targets is a meta tensor"),
        (TARGET, ANSWER, dict(stop=1), TypeError, "stop must be a bool"),
        (TARGET, ANSWER, dict(stop="yes"), TypeError, "stop must be a bool"),
    ],
)
def test_verify_bad_input(targets, answers, kwargs, error, message):
    with pytest.raises(error, match=message):
        verify(targets, answers, **kwargs)


@pytest.mark.parametrize(
    "targets, error, message",
    [
        (torch.tensor([1.0]), TypeError, "targets must have an integer dtype"),
        (torch.tensor([True]), TypeError, "targets must have an integer dtype"),
        (
            torch.tensor([1], dtype=torch.uint8),
            TypeError,
            "targets must have an integer",
        ),
        ([1, 2], TypeError, "targets must be a torch.Tensor"),
        (torch.tensor([10]), ValueError, r"targets must lie in \[0, 10\)"),
        (torch.tensor([-1]), ValueError, r"targets must lie in \[0, 10\)"),
        (torch.zeros(0, dtype=torch.long), ValueError, "targets is empty"),
        (torch.tensor([1], device=META), ValueError, "targets is a meta tensor"),
    ],
)
def test_encode_prompts_bad_input(targets, error, message):
    with pytest.raises(error, match=message):
        encode_prompts(targets)


def test_encode_prompts_any_batch_shape():
    prompts = encode_prompts(torch.tensor([[1, 2], [3, 4]]))
    assert prompts.shape == (2, 2, 2) and (prompts[..., 1] == EQUALS).all()


def test_decode_drops_padding_and_prints_eos_as_a_dot():
    seq = torch.tensor([[PAD, 3, 10, 4], [7, 10, 3, EOS]])
    assert decode(seq) == ["3=4", "7=3."] and decode(seq[1]) == "7=3."


@pytest.mark.parametrize(
    "tokens_, error, message",
    [
        (torch.tensor([0, 13]), ValueError, r"tokens must hold ids in \[0, 13\)"),
        (torch.tensor([0, -1]), ValueError, r"tokens must hold ids in \[0, 13\)"),
        (torch.tensor([0.0, 1.0]), TypeError, "tokens must have an integer dtype"),
        (torch.tensor([True]), TypeError, "tokens must have an integer dtype"),
        (
            torch.zeros(1, 1, 1, dtype=torch.long),
            ValueError,
            r"expected \[L\] or \[N, L\]",
        ),
        (torch.zeros(0, dtype=torch.long), ValueError, "tokens is empty"),
        (torch.zeros(2, dtype=torch.long, device=META), ValueError, "meta"),
        ([1, 2], TypeError, "tokens must be a torch.Tensor"),
    ],
)
def test_decode_bad_input(tokens_, error, message):
    with pytest.raises(error, match=message):
        decode(tokens_)


@pytest.mark.parametrize("answer_len", [1, 2, 3])
def test_reset_gives_left_padded_prompts_of_uniform_target_digits(answer_len):
    task = TokenTask(4000, answer_len, device="cpu", seed=0)
    obs = task.reset()
    assert (
        obs.shape
        == (4000, PROMPT_LEN + answer_len - 1)
        == (task.num_envs, task.obs_len)
    )
    assert obs.dtype == torch.long and (obs[:, : answer_len - 1] == PAD).all()
    assert torch.equal(obs[:, answer_len - 1 :], task.prompts)
    assert torch.equal(task.prompts, encode_prompts(task.targets))
    counts = torch.bincount(task.targets, minlength=task.n_targets)
    assert len(counts) == task.n_targets == 10 and counts.min() > 0.8 * 4000 / 10
    assert task.max_steps == answer_len and task.group_size == 1


def test_groups_repeat_each_prompt_in_consecutive_rows():
    task = TokenTask(4000, device="cpu", seed=0, group_size=8)
    task.reset()
    groups = task.targets.view(500, 8)
    assert task.num_prompts == 500 and (groups == groups[:, :1]).all()
    counts = torch.bincount(groups[:, 0], minlength=10)  # one draw per group, uniform
    assert counts.min() > 0.6 * 500 / 10
    # the draws are the same as for num_envs = num_prompts, group_size 1
    single = TokenTask(500, device="cpu", seed=0)
    single.reset()
    assert torch.equal(groups[:, 0], single.targets)
    whole = TokenTask(6, device="cpu", seed=1, group_size=6)
    whole.reset()
    assert (whole.targets == whole.targets[0]).all()


def test_step_appends_tokens_rewards_at_the_end_then_freezes():
    task = TokenTask(4, answer_len=3, device="cpu", seed=1)
    obs = task.reset()
    y = task.targets
    answer = torch.stack([y, torch.full_like(y, 5), torch.full_like(y, 5)], 1)  # y + 10
    answer[1, 2] = (answer[1, 2] + 1) % 10  # wrong last digit
    answer[2, 0] = 10  # '=' in the answer: a format error
    answer[3, 1] = EOS  # stop=False: EOS is just a non-digit, the answer goes on
    for t in range(3):
        prev = obs
        obs, reward, terminated, truncated = task.step(answer[:, t])
        assert torch.equal(obs[:, :-1], prev[:, 1:]) and torch.equal(
            obs[:, -1], answer[:, t]
        )
        assert reward.dtype == torch.float32
        assert terminated.dtype == truncated.dtype == torch.bool
        assert terminated.tolist() == [t == 2] * 4 and not truncated.any()
        if t < 2:
            assert not reward.any()
    assert reward.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert torch.equal(task.sequences, torch.cat([task.prompts, answer], 1))
    for _ in range(2):  # frozen after the end
        frozen, reward, terminated, truncated = task.step(torch.tensor([1, 2, 3, 4]))
        assert torch.equal(frozen, obs) and not reward.any()
        assert not (terminated | truncated).any()
    obs = task.reset()  # a new episode: the prompts again, steps count from the start
    assert (obs[:, :2] == PAD).all() and not task.step(answer[:, 0])[2].any()


def test_stop_ends_an_answer_at_eos_and_truncates_at_answer_len():
    task = TokenTask(4, answer_len=3, device="cpu", seed=2, group_size=4, stop=True)
    task.reset()
    y = task.targets[0].item()
    d = (y - 1) % 10
    answer = torch.tensor([[1, d, EOS], [EOS, EOS, 5], [1, d, 0], [y, EOS, EOS]])
    rewards, ends, cuts, seqs = [], [], [], []
    for t in range(3):
        obs, reward, terminated, truncated = task.step(answer[:, t])
        rewards.append(reward.tolist())
        ends.append(terminated.tolist())
        cuts.append(truncated.tolist())
        seqs.append(task.sequences.clone())
        assert torch.equal(obs, task.sequences[:, 1:])
    assert ends == [[0, 1, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    assert cuts == [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert rewards == [[0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]]
    assert torch.equal(seqs[0][1], seqs[2][1]) and torch.equal(seqs[1][3], seqs[2][3])
    assert decode(task.sequences) == [f"{y}=1{d}.", f"{y}=.", f"{y}=1{d}0", f"{y}={y}."]
    frozen, reward, terminated, truncated = task.step(torch.tensor([1, 1, 1, 1]))
    assert torch.equal(frozen, obs) and not reward.any()
    assert not (terminated | truncated).any()


def test_stop_false_never_truncates_and_stop_true_only_without_eos():
    for stop in (False, True):
        task = TokenTask(3, answer_len=2, device="cpu", stop=stop)
        task.reset()
        task.step(torch.tensor([1, 2, 3]))
        _, _, terminated, truncated = task.step(torch.tensor([4, 5, 6]))
        assert (
            terminated.tolist() == [not stop] * 3 and truncated.tolist() == [stop] * 3
        )


@pytest.mark.parametrize(
    "action, error, message",
    [
        (torch.tensor([1, 2]), ValueError, r"expected \[3\]"),
        (torch.tensor([[1, 2, 3]]), ValueError, r"expected \[3\]"),
        (torch.tensor([1.0, 2.0, 3.0]), TypeError, "integer dtype"),
        (torch.tensor([True, False, True]), TypeError, "integer dtype"),
        (torch.tensor([1, 2, 3], dtype=torch.uint8), TypeError, "integer dtype"),
        (torch.tensor([1, 2, 3], dtype=torch.complex64), TypeError, "integer dtype"),
        (torch.tensor([1, 2, PAD]), ValueError, r"\[0, 12\)"),
        (torch.tensor([1, 2, -1]), ValueError, r"\[0, 12\)"),
        (torch.tensor([1, 2, 3], device=META), ValueError, "meta"),
        ([1, 2, 3], TypeError, "torch.Tensor"),
    ],
)
def test_step_bad_action(action, error, message):
    task = TokenTask(3, device="cpu")
    task.reset()
    with pytest.raises(error, match=message):
        task.step(action)


def test_step_before_reset():
    with pytest.raises(RuntimeError, match="reset"):
        TokenTask(2, device="cpu").step(torch.tensor([1, 2]))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(num_envs=0), ValueError, "num_envs must be an int >= 1"),
        (dict(num_envs=2.0), TypeError, "num_envs must be an int"),
        (dict(num_envs=2, answer_len=0), ValueError, "answer_len"),
        (
            dict(num_envs=2, answer_len=9),
            ValueError,
            r"answer_len must be an int in \[1, 8\]",
        ),
        (dict(num_envs=2, answer_len="2"), TypeError, "answer_len must be an int"),
        (dict(num_envs=2, device="gpu"), ValueError, "not a device"),
        (dict(num_envs=2, seed=1.5), TypeError, "seed must be an int"),
        (dict(num_envs=2, seed=-1), ValueError, "seed must be an int >= 0"),
        (dict(num_envs=2, seed=None), TypeError, "seed must be an int"),
        (dict(num_envs=2, group_size=0), ValueError, "group_size must be an int >= 1"),
        (dict(num_envs=2, group_size=2.0), TypeError, "group_size must be an int"),
        (dict(num_envs=6, group_size=4), ValueError, "multiple of group_size=4"),
        (dict(num_envs=2, stop=1), TypeError, "stop must be a bool"),
        (dict(num_envs=2, stop="True"), TypeError, "stop must be a bool"),
    ],
)
def test_task_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        TokenTask(**kwargs)


@pytest.mark.parametrize("stop", [False, True])
def test_no_host_sync_in_reset_and_step(stop):
    task = TokenTask(4, answer_len=3, device="cpu", group_size=2, stop=stop)
    with no_host_reads():  # only check() reads, on the CPU alone (conftest.ALLOWED)
        task.reset()
        for _ in range(task.max_steps + 1):
            task.step(torch.full((4,), EOS))


def test_base_model_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = (base_model(2, steps=3, seed=s, device="cpu") for s in (0, 0, 1))
    assert torch.equal(torch.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert (a.vocab_size, a.pad_id, a.n_actions, a.block_size) == (
        13,
        PAD,
        12,
        PROMPT_LEN + 2,
    )
    assert not hasattr(tokens, "base_model")  # it moved to plainrl.pretrain


def test_base_model_knows_the_format_not_the_rule():
    policy = base_model(2, seed=0, device="cpu")
    task = TokenTask(4096, 2, device="cpu", seed=3)
    torch.manual_seed(0)
    obs = task.reset()
    with torch.no_grad():
        for _ in range(task.max_steps):
            obs, reward, *_ = task.step(policy(obs).sample())
    answers = task.sequences[:, PROMPT_LEN:]
    assert (answers < 10).all(-1).float().mean() > 0.99
    assert abs(reward.mean().item() - 0.1) < 0.02  # chance: one last digit in ten


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(answer_len=0), ValueError, "answer_len"),
        (dict(answer_len=9), ValueError, "answer_len"),
        (dict(answer_len=2.0), TypeError, "answer_len"),
        (dict(steps=0), ValueError, "steps must be an int >= 1"),
        (dict(batch_size=1.5), TypeError, "batch_size must be an int"),
        (dict(seed=1.5), TypeError, "seed must be an int"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(lr=0.0), ValueError, "lr must be a finite real number > 0"),
        (dict(lr=-1.0), ValueError, "lr"),
        (dict(lr=math.nan), ValueError, "lr"),
        (dict(lr=math.inf), ValueError, "lr"),
        (dict(lr="0.1"), TypeError, "lr"),
        (dict(device="gpu"), ValueError, "not a device"),
    ],
)
def test_base_model_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        base_model(**kwargs)


def test_encode_writes_prompts_as_the_task_does():
    task = TokenTask(2, device="cpu", seed=0)
    obs = task.reset()
    texts = task.decode(task.prompts)
    assert torch.equal(task.encode(texts), task.prompts)
    assert task.encode(["7="]).tolist() == [[7, EQUALS]]
    with pytest.raises(TypeError, match="texts"):
        task.encode("7=")
    for bad in (["7=."], ["123"], [""]):  # EOS, too long, empty
        with pytest.raises(ValueError, match="texts"):
            task.encode(bad)
    assert obs.shape[1] == task.obs_len
