"""Chapter 8: the addition task (verifier, buckets, held-out split, corpus, env)."""

import pytest
import torch

from plainrl.checks import check_actions
from plainrl.envs.addition import (
    ANSWER_LEN,
    BUCKETS,
    CHARS,
    EOS,
    EQUALS,
    HELD_OUT,
    PAD,
    PLUS,
    PROMPT_LEN,
    VOCAB_SIZE,
    AdditionTask,
    Prompts,
    bucket,
    corpus,
    decode,
    dropped_carry,
    encode_answers,
    encode_prompts,
    held_out,
    needs_carry,
    verify,
)
from plainrl.trajectory import ENV_MEMBERS


def t(*xs):
    return torch.tensor(xs)


def tokens(text):
    "Token ids of `text` ('.' is EOS, ' ' is PAD), as a [1, L] tensor."
    return torch.tensor([[PAD if ch == " " else CHARS.index(ch) for ch in text]])


@pytest.fixture(scope="module")
def train_prompts():
    return Prompts("train", "cpu")


@pytest.fixture(scope="module")
def held_prompts():
    return Prompts("held_out", "cpu")


def test_vocabulary():
    assert (PLUS, EQUALS, EOS, PAD, VOCAB_SIZE) == (10, 11, 12, 13, 14)
    assert CHARS[PLUS] == "+" and CHARS[EQUALS] == "=" and CHARS[EOS] == "."
    assert (PROMPT_LEN, ANSWER_LEN) == (8, 5)  # "999+999=" and "1998."
    assert BUCKETS == ("no carry", "carry")


def test_prompts_are_left_padded_and_answers_end_with_eos():
    a, b = t(47, 5, 999, 0), t(385, 5, 999, 0)
    prompts = encode_prompts(a, b)
    assert prompts.shape == (4, PROMPT_LEN)
    assert decode(prompts) == ["47+385=", "5+5=", "999+999=", "0+0="]
    assert prompts[1, :4].tolist() == [PAD] * 4  # the padding comes first
    answers = encode_answers(a + b)
    assert decode(answers) == ["432.", "10.", "1998.", "0."]
    assert answers[3].tolist() == [0, EOS, PAD, PAD, PAD]
    lengths = (answers != PAD).sum(1).tolist()
    assert lengths == [4, 3, 5, 2]  # answers of four lengths


@pytest.mark.parametrize(
    "a, b, answer, reward",
    [
        (47, 385, "432.", 1),
        (47, 385, "432.99", 1),  # what follows EOS is never read
        (47, 385, "322.", 0),  # the carries dropped
        (47, 385, "432", 0),  # no EOS: not well formed
        (47, 385, "4320.", 0),
        (47, 385, "0432.", 0),  # a leading zero
        (47, 385, "43.", 0),
        (47, 385, ".", 0),  # empty
        (47, 385, "4+2.", 0),
        (0, 0, "0.", 1),
        (999, 999, "1998.", 1),
        (999, 999, "1998", 0),
        (5, 5, "10.", 1),
        (5, 5, "0.", 0),
    ],
)
def test_verify(a, b, answer, reward):
    assert verify(t(a), t(b), tokens(answer)).tolist() == [reward]


def test_verify_on_a_batch_and_its_dtype():
    a, b = t(1, 2, 3), t(1, 2, 3)
    answers = torch.cat([tokens("2.  "), tokens("5.  "), tokens("6.55")])
    reward = verify(a, b, answers)
    assert reward.dtype == torch.float32 and reward.tolist() == [1, 0, 1]
    assert verify(a, b, answers.int()).tolist() == [1, 0, 1]


def test_carry_buckets_and_the_dropped_carry():
    a, b = t(47, 12, 5, 50, 105, 999, 0), t(385, 3, 5, 50, 107, 1, 0)
    assert needs_carry(a, b).tolist() == [True, False, True, True, True, True, False]
    assert bucket(a, b).tolist() == [1, 0, 1, 1, 1, 1, 0]
    assert dropped_carry(a, b).tolist() == [322, 15, 0, 0, 202, 990, 0]
    no_carry = ~needs_carry(a, b)
    assert torch.equal(dropped_carry(a, b)[no_carry], (a + b)[no_carry])


def test_held_out_split_is_disjoint_and_deterministic(train_prompts, held_prompts):
    n = 1000
    assert len(train_prompts) + len(held_prompts) == n * n
    pairs = set((train_prompts.a * n + train_prompts.b).tolist())
    held = set((held_prompts.a * n + held_prompts.b).tolist())
    assert not pairs & held and len(pairs | held) == n * n
    assert abs(len(held) / n**2 - 1 / HELD_OUT) < 0.002
    assert held_out(held_prompts.a, held_prompts.b).all()
    assert not held_out(train_prompts.a, train_prompts.b).any()
    gen = torch.Generator().manual_seed(0)
    a, b = train_prompts.sample(20_000, gen)
    assert not held_out(a, b).any()
    a, b = held_prompts.sample(20_000, gen)
    assert held_out(a, b).all()
    again = Prompts("held_out", "cpu")
    assert torch.equal(again.a, held_prompts.a) and torch.equal(again.b, held_prompts.b)


def test_both_buckets_and_every_operand_length_are_drawn(train_prompts):
    gen = torch.Generator().manual_seed(0)
    a, b = train_prompts.sample(30_000, gen)
    carry = needs_carry(a, b).float().mean().item()
    assert 0.5 < carry < 0.7  # about 58% of the prompts carry
    for x in (a, b):
        small = (x < 10).float().mean().item()
        large = (x >= 100).float().mean().item()
        assert abs(small - 1 / 3) < 0.02 and abs(large - 1 / 3) < 0.02


def test_corpus_mistake_rate(train_prompts):
    gen = torch.Generator().manual_seed(0)
    a, b, c, documents = corpus(train_prompts, 20_000, drop=0.6, generator=gen)
    carry = needs_carry(a, b)
    right = c == a + b
    assert right[~carry].all()  # no mistake without a carry
    wrong = 1 - right[carry].float().mean().item()
    assert abs(wrong - 0.6) < 0.02
    assert torch.equal(c[~right], dropped_carry(a, b)[~right])
    text = decode(documents[:3])
    for i, line in enumerate(text):
        assert line == f"{a[i].item()}+{b[i].item()}={c[i].item()}."
    assert (documents[:, -1] == EOS).all()  # left-padded: each document ends at EOS
    a, b, c, _ = corpus(train_prompts, 1000, drop=0.0, generator=gen)
    assert torch.equal(c, a + b)  # drop=0: no mistake at all
    first, again = (torch.Generator().manual_seed(1) for _ in range(2))
    assert torch.equal(
        corpus(train_prompts, 5, generator=first)[3],
        corpus(train_prompts, 5, generator=again)[3],
    )


def test_env_has_the_protocol_and_groups():
    env = AdditionTask(12, device="cpu", seed=0, group_size=4)
    assert all(hasattr(env, name) for name in ENV_MEMBERS)
    assert env.n_actions == VOCAB_SIZE - 1 and env.max_steps == ANSWER_LEN
    obs = env.reset()
    assert obs.shape == (12, env.obs_len) and obs.dtype == torch.long
    for i in range(3):  # consecutive rows share a prompt
        rows = slice(4 * i, 4 * i + 4)
        assert (obs[rows] == obs[4 * i]).all()
        assert (env.a[rows] == env.a[4 * i]).all()
    assert env.num_prompts == 3
    first = (env.a.clone(), env.b.clone())
    again = AdditionTask(12, device="cpu", seed=0, group_size=4)
    again.reset()
    assert torch.equal(again.a, first[0]) and torch.equal(again.b, first[1])
    assert not held_out(env.a, env.b).any()
    test = AdditionTask(64, device="cpu", split="held_out")
    test.reset()
    assert held_out(test.a, test.b).all()


def test_env_stops_at_eos_and_pays_the_verifier():
    env = AdditionTask(3, device="cpu")
    env.reset()
    env.a, env.b = t(47, 5, 999), t(385, 5, 999)  # fixed prompts, for the test
    env.sequences[:, -PROMPT_LEN:] = encode_prompts(env.a, env.b)
    answers = [tokens("432.9"), tokens("0.999"), tokens("19981")]
    answers = torch.cat(answers)
    rewards, ended, cut = [], [], []
    for step in range(ANSWER_LEN):
        obs, r, term, trunc = env.step(answers[:, step])
        rewards.append(r)
        ended.append(term)
        cut.append(trunc)
    rewards, ended, cut = (torch.stack(x, 1) for x in (rewards, ended, cut))
    assert rewards.tolist() == [[0, 0, 0, 1, 0], [0, 0, 0, 0, 0], [0] * 5]
    assert ended.tolist()[0] == [False, False, False, True, False]
    assert ended.tolist()[1] == [False, True, False, False, False]
    assert not ended[2].any() and cut[2].tolist() == [False] * 4 + [True]
    assert not cut[:2].any()
    assert decode(obs)[:2] == ["47+385=432.", "5+5=0."]  # finished copies stay put
    obs2, r, term, trunc = env.step(answers[:, 0])  # frozen once every copy is done
    assert torch.equal(obs2, obs) and not r.any() and not (term | trunc).any()


def test_bad_input_names_the_argument():
    with pytest.raises(TypeError, match="a must"):
        encode_prompts([1], t(1))
    with pytest.raises(TypeError, match="b must"):
        encode_prompts(t(1), t(1.0))
    with pytest.raises(ValueError, match="b has shape"):
        encode_prompts(t(1, 2), t(1))
    with pytest.raises(ValueError, match=r"a and b must lie in \[0, 1000\)"):
        encode_prompts(t(1000), t(1))
    with pytest.raises(ValueError, match="a and b must lie"):
        verify(t(-1), t(1), tokens("0."))
    with pytest.raises(ValueError, match="answers has shape"):
        verify(t(1, 2), t(1, 2), tokens("2."))
    with pytest.raises(TypeError, match="answers must"):
        verify(t(1), t(1), tokens("2.").float())
    with pytest.raises(ValueError, match="answers must be ids"):
        verify(t(1), t(1), t(2, 14)[None])
    with pytest.raises(ValueError, match="split must be one of"):
        Prompts("test")
    with pytest.raises(ValueError, match="num_envs=6 must be a multiple"):
        AdditionTask(6, device="cpu", group_size=4)
    with pytest.raises(TypeError, match="num_envs must be an int"):
        AdditionTask(6.0, device="cpu")
    with pytest.raises(ValueError, match="drop must be"):
        corpus(Prompts("held_out", "cpu"), 4, drop=1.5)
    with pytest.raises(TypeError, match="prompts must be a Prompts"):
        corpus("train", 4)
    env = AdditionTask(2, device="cpu")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(t(0, 0))
    env.reset()
    with pytest.raises(ValueError, match="action must lie"):
        env.step(t(0, PAD))
    check_actions(t(0, EOS), env)


def test_addition_prompts_encode_from_text():
    task = AdditionTask(4, device="cpu", seed=0)
    task.reset()
    assert torch.equal(task.encode(task.decode(task.prompts)), task.prompts)
    want = encode_prompts(torch.tensor([47]), torch.tensor([385]))
    assert torch.equal(task.encode(["47+385="]), want)
    with pytest.raises(ValueError, match="texts"):
        task.encode(["1234+5678="])  # longer than a prompt
