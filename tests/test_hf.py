"""plainrl.hf (the appendix): a transformers causal LM as a policy of the engine.

Tiny GPT-2 and Qwen2 models built from their configurations, and a tokenizer built
here from the token task's characters: nothing is downloaded."""

import subprocess
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging

from plainrl import hf
from plainrl.engine import Algorithm, Budget, train
from plainrl.envs.tokens import CHARS, EOS, PAD, TokenTask
from plainrl.generate import generate, rollout_tokens
from plainrl.lm import WholeAnswers
from plainrl.tasks import TaskConfig
from plainrl.trajectory import rollout

logging.disable_progress_bar()
TOKENIZER = hf.char_tokenizer(CHARS[:EOS])  # ids 0-9, '=' 10, <eos> 11, <pad> 12


def gpt2(seed=0, dropout=0.0):
    "A 2-layer GPT-2 of width 32, random weights far from uniform."
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(TOKENIZER),
        n_positions=32,
        n_embd=32,
        n_layer=2,
        n_head=2,
        initializer_range=0.2,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return GPT2LMHeadModel(config)


def qwen2(seed=0):
    "A 2-layer Qwen2 (Llama family) of width 32, 4 query and 2 key-value heads."
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(TOKENIZER),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        initializer_range=0.2,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    return Qwen2ForCausalLM(config)


ARCHS = {"gpt2": gpt2, "qwen2": qwen2}
TEXTS = ["7=", "123=", "45=", "0="]


@pytest.fixture(params=list(ARCHS))
def policy(request):
    return hf.HFPolicy(ARCHS[request.param](), TOKENIZER, device="cpu")


def states_of(prompts, completions, pad_id):
    "[B, T, P + T - 1]: the left-padded state before each completion token."
    B, P = prompts.shape
    T = completions.shape[1]
    full = torch.cat([prompts, completions], 1)
    pad = torch.full((B, T), pad_id)
    return torch.stack(
        [torch.cat([pad[:, : T - 1 - t], full[:, : P + t]], 1) for t in range(T)], 1
    )


def test_char_tokenizer_has_the_token_tasks_ids():
    assert TOKENIZER.encode("47=<eos>") == [4, 7, 10, EOS]
    assert (TOKENIZER.eos_token_id, TOKENIZER.pad_token_id) == (EOS, PAD)
    assert len(TOKENIZER) == TokenTask.vocab_size
    assert TOKENIZER.decode([4, 7, 10, EOS]) == "47=<eos>"
    assert TOKENIZER(["7=", "123="], padding=True)["input_ids"][0] == [PAD, PAD, 7, 10]
    with pytest.raises(Exception, match="UNK"):  # no silent unknown token
        TOKENIZER.encode("4+7")
    assert hf.task_actions(TokenTask, TOKENIZER) == list("0123456789=") + ["<eos>"]
    policy = hf.HFPolicy(gpt2(), TOKENIZER, device="cpu")
    assert (policy.n_actions, policy.pad_id, policy.eos_id) == (12, PAD, EOS)
    assert policy.token_ids.tolist() == list(range(13))  # the task's own ids
    assert policy.decode(policy.encode(TEXTS)) == TEXTS


def test_left_padding_gives_the_same_next_token_distribution(policy):
    padded = policy.encode(TEXTS)
    assert padded[0].tolist() == [PAD, PAD, 7, 10]
    in_batch = policy(padded).probs
    for b, text in enumerate(TEXTS):
        alone = policy(policy.encode([text])).probs[0]
        torch.testing.assert_close(in_batch[b], alone, rtol=0, atol=1e-5)
    # [batch..., L] prefixes: the same distributions, reshaped
    nested = policy(padded.view(2, 2, -1)).probs
    torch.testing.assert_close(nested.view(4, -1), in_batch, rtol=0, atol=1e-6)


@pytest.mark.parametrize("actions", [None, ["9", "3", "<eos>", "=", "0"]])
def test_log_probs_equal_the_models_own_forward(policy, actions):
    if actions is not None:  # a choice of tokens in another order: eq. A1's gather
        policy = hf.HFPolicy(policy.model, TOKENIZER, actions, device="cpu")
    prompts = policy.encode(["9=", "309=", "0="])
    torch.manual_seed(0)
    completions = torch.randint(policy.n_actions, (3, 4))
    mask = torch.arange(4) < torch.tensor([[4], [2], [1]])
    ours = policy.sequence_log_probs(prompts, completions, mask)
    tokens = policy.token_ids
    for b in range(3):
        k = int(mask[b].sum())
        row = torch.cat([prompts[b][prompts[b] != policy.pad_id], completions[b, :k]])
        logits = policy.model(input_ids=tokens[row][None]).logits[0]
        own = logits[:, tokens[:-1]].log_softmax(-1)[-k - 1 : -1]  # before each c_t
        picked = own.gather(1, completions[b, :k, None])[:, 0]
        torch.testing.assert_close(ours[b, :k], picked, rtol=0, atol=1e-5)
    assert (ours[~mask] == 0).all()
    # the engine's update: policy(states).log_prob(actions), one prefix at a time
    pad = policy.pad_id
    states = states_of(prompts, torch.where(mask, completions, pad), pad)
    engine = policy(states).log_prob(torch.where(mask, completions, 0))
    torch.testing.assert_close(torch.where(mask, engine, 0.0), ours, rtol=0, atol=1e-5)


def test_logits_of_the_last_positions_only_change_nothing(policy):
    prompts = policy.encode(TEXTS)
    completions = torch.tensor([[1, 2], [3, EOS], [4, 4], [0, 5]])
    kept = policy(prompts).logits, policy.sequence_log_probs(prompts, completions)
    assert policy.keeps_logits  # both models compute only the logits asked for
    policy.keeps_logits = False  # as for a model without logits_to_keep
    every = policy(prompts).logits, policy.sequence_log_probs(prompts, completions)
    for a, b in zip(kept, every):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_the_cache_reads_each_token_once_and_gives_the_full_forward(policy):
    prompts = policy.encode(TEXTS)
    more = torch.tensor([[4, 5, 6], [7, EOS, PAD], [PAD, PAD, PAD], [1, 1, EOS]])
    full = policy.logits(torch.cat([prompts, more], 1))[:, prompts.shape[1] - 1 :]
    with torch.no_grad():
        cache = hf.HFCache(policy, 4)
        steps = [policy.logits(prompts, cache)[:, -1]]
        steps += [policy.logits(more[:, t : t + 1], cache)[:, -1] for t in range(3)]
    real = torch.cat([torch.ones(4, 1, dtype=torch.bool), more != PAD], 1)
    cached = torch.stack(steps, 1)
    torch.testing.assert_close(cached[real], full[real], rtol=0, atol=1e-5)
    assert cache.length == 7 and cache.pos.tolist() == [5, 6, 3, 5]
    with pytest.raises(RuntimeError, match="no_grad"):
        policy.logits(more[:, :1], cache)


def test_greedy_sampling_equals_transformers_generate(policy):
    prompts = policy.encode(TEXTS + ["5=", "31="])  # answers that end at EOS too
    ours, log_probs, mask = generate(policy, prompts, 8, stop_id=EOS, greedy=True)
    theirs = policy.model.generate(
        input_ids=policy.token_ids[prompts],
        attention_mask=(prompts != policy.pad_id).long(),
        do_sample=False,
        max_new_tokens=8,
        eos_token_id=EOS,
        pad_token_id=PAD,
        suppress_tokens=[PAD],  # the padding token is no action (eq. A1)
    )[:, prompts.shape[1] :]
    assert torch.equal(ours[:, : theirs.shape[1]], theirs)
    assert (ours[:, theirs.shape[1] :] == policy.pad_id).all()
    assert torch.equal(mask, (ours != policy.pad_id))
    assert mask[:4].all() and not mask[4:].all()  # the last two stopped at EOS
    expected = policy.sequence_log_probs(prompts, ours, mask)
    torch.testing.assert_close(log_probs, expected, rtol=0, atol=1e-5)


def test_seeded_sampling_is_reproducible_and_is_rollouts(policy):
    prompts = policy.encode(TEXTS)
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(generate(policy, prompts, 6, stop_id=EOS))
    assert all(torch.equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert not torch.equal(draws[0][0], draws[2][0])
    trajs = []
    for sample in (rollout_tokens, rollout):  # ours, chapter 3's
        task = TokenTask(
            16, answer_len=4, device="cpu", seed=3, group_size=4, stop=True
        )
        torch.manual_seed(5)
        trajs.append(sample(task, policy))
    ours, ref = trajs
    m = ref.mask
    assert torch.equal(ours.mask, m) and torch.equal(ours.obs, ref.obs)
    assert torch.equal(ours.actions[m], ref.actions[m])
    assert torch.equal(ours.rewards, ref.rewards)
    assert torch.equal(ours.terminated, ref.terminated)
    assert torch.equal(ours.truncated, ref.truncated)
    assert ours.group_size == 4
    torch.testing.assert_close(ours.log_probs[m], ref.log_probs[m], rtol=0, atol=1e-5)


def test_dropout_stays_off_and_bfloat16_returns_float32():
    policy = hf.HFPolicy(gpt2(dropout=0.5), TOKENIZER, device="cpu").train()
    assert policy.training and not policy.model.training
    prompts = policy.encode(TEXTS)
    assert torch.equal(policy.logits(prompts), policy.logits(prompts))
    reference = policy.logits(prompts)
    policy.compute_dtype = torch.bfloat16
    low = policy.logits(prompts)
    assert low.dtype == torch.float32
    assert 0 < (low - reference).abs().max() < 0.1  # computed in bfloat16


def test_diverged_parameters_stop_sampling_with_a_floating_point_error(policy):
    prompts = policy.encode(TEXTS)
    with torch.no_grad():
        next(policy.parameters()).fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        policy(prompts)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        generate(policy, prompts, 2)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_a_few_engine_updates_raise_the_verifier_reward(arch):
    actions = hf.task_actions(TokenTask, TOKENIZER)
    policy = hf.HFPolicy(ARCHS[arch](), TOKENIZER, actions, device="cpu")
    run = train(
        TaskConfig(name="tokens", num_envs=256, answer_len=1),
        policy,
        Algorithm(lr=1e-2),
        Budget(max_updates=20, stop_when_solved=False),
        device="cpu",
        sample=rollout_tokens,
    )
    success = [row["success"] for row in run.state.rows]
    assert success[0] < 0.15 and success[-1] > success[0] + 0.3, success


def test_from_pretrained_reads_what_save_pretrained_wrote(tmp_path):
    policy = hf.HFPolicy(qwen2(), TOKENIZER, device="cpu")
    policy.save_pretrained(tmp_path)
    loaded = hf.from_pretrained(tmp_path, "cpu", env=TokenTask)
    assert type(loaded.model) is Qwen2ForCausalLM
    assert loaded.token_ids.tolist() == policy.token_ids.tolist()
    # a tokenizer of other ids: the task's actions are found by their text
    other = hf.HFPolicy(qwen2(), hf.char_tokenizer("=0123456789"), device="cpu")
    other.save_pretrained(tmp_path / "other")
    mapped = hf.from_pretrained(tmp_path / "other", "cpu", env=TokenTask)
    assert mapped.token_ids.tolist() == [*range(1, 11), 0, 11, 12]
    prompts = policy.encode(TEXTS)
    assert torch.equal(loaded.logits(prompts), policy.logits(prompts))
    subset = hf.from_pretrained(str(tmp_path), "cpu", actions=["1", "<eos>"])
    assert subset.token_ids.tolist() == [1, EOS, PAD] and subset.eos_id == 1
    # a checkpoint holds the policy's state_dict: it loads into a fresh copy
    fresh = hf.HFPolicy(qwen2(seed=1), TOKENIZER, device="cpu")
    assert not torch.equal(fresh.logits(prompts), policy.logits(prompts))
    fresh.load_state_dict(policy.state_dict())
    assert torch.equal(fresh.logits(prompts), policy.logits(prompts))


def _bad_calls():
    model = gpt2()
    policy = hf.HFPolicy(model, TOKENIZER, device="cpu")
    prompts = policy.encode(TEXTS)
    wrong = TokenTask(4, device="cpu")
    small = hf.HFPolicy(model, TOKENIZER, ["1", "2"], device="cpu")
    gap = torch.tensor([[False, True]] * 4)  # True after False
    return {
        "chars-type": (lambda: hf.char_tokenizer(5), TypeError, "chars"),
        "chars-repeated": (lambda: hf.char_tokenizer("112"), ValueError, "chars"),
        "chars-empty": (lambda: hf.char_tokenizer(""), ValueError, "chars"),
        "eos-short": (lambda: hf.char_tokenizer("12", eos="."), ValueError, "eos"),
        "eos-pad": (lambda: hf.char_tokenizer("1", "<x>", "<x>"), ValueError, "pad"),
        "model": (lambda: hf.HFPolicy("gpt2", TOKENIZER), TypeError, "model"),
        "tokenizer": (lambda: hf.HFPolicy(model, "gpt2"), TypeError, "tokenizer"),
        "actions-str": (
            lambda: hf.HFPolicy(model, TOKENIZER, "12"),
            TypeError,
            "actions",
        ),
        "actions-two": (
            lambda: hf.HFPolicy(model, TOKENIZER, ["12"]),
            ValueError,
            "actions",
        ),
        "actions-dup": (
            lambda: hf.HFPolicy(model, TOKENIZER, ["1", 1]),
            ValueError,
            "actions",
        ),
        "actions-id": (
            lambda: hf.HFPolicy(model, TOKENIZER, [99]),
            ValueError,
            "actions",
        ),
        "actions-kind": (
            lambda: hf.HFPolicy(model, TOKENIZER, [1.0]),
            TypeError,
            "actions",
        ),
        "dtype": (
            lambda: hf.HFPolicy(model, TOKENIZER, compute_dtype=torch.float16),
            ValueError,
            "compute_dtype",
        ),
        "tokens-float": (lambda: policy(prompts.float()), TypeError, "tokens"),
        "tokens-range": (lambda: policy(prompts + 13), ValueError, "tokens"),
        "tokens-shape": (lambda: policy.logits(prompts[0]), ValueError, "tokens"),
        "too-long": (
            lambda: policy.logits(torch.zeros(1, 40, dtype=torch.long)),
            ValueError,
            "positions",
        ),
        "temperature": (
            lambda: policy(prompts, temperature=0.0),
            ValueError,
            "temperature",
        ),
        "cache": (lambda: policy.logits(prompts, cache={}), TypeError, "cache"),
        "cache-rows": (
            lambda: torch.no_grad()(policy.logits)(prompts, hf.HFCache(policy, 3)),
            ValueError,
            "batch_size",
        ),
        "cache-policy": (lambda: hf.HFCache(model, 2), TypeError, "policy"),
        "completions": (
            lambda: policy.sequence_log_probs(prompts, prompts[:2]),
            ValueError,
            "completions",
        ),
        "completions-range": (
            lambda: policy.sequence_log_probs(prompts, prompts),
            ValueError,
            "completions",
        ),
        "mask": (
            lambda: policy.sequence_log_probs(prompts, prompts[:, :2], gap),
            ValueError,
            "mask",
        ),
        "texts": (lambda: policy.encode("7="), TypeError, "texts"),
        "texts-action": (lambda: small.encode(["7="]), ValueError, "texts"),
        "n_tokens": (lambda: generate(policy, prompts, 0), ValueError, "n_tokens"),
        "stop_id": (
            lambda: generate(policy, prompts, 2, stop_id=12),
            ValueError,
            "stop_id",
        ),
        "greedy": (
            lambda: generate(policy, prompts, 2, greedy=1),
            TypeError,
            "greedy",
        ),
        "generate-policy": (
            lambda: generate(model, prompts, 2),
            TypeError,
            "policy",
        ),
        "prompts": (lambda: generate(policy, prompts[0], 2), ValueError, "prompts"),
        "env": (lambda: rollout_tokens(object(), policy), TypeError, "task"),
        "env-ids": (lambda: rollout_tokens(wrong, small), ValueError, "n_actions"),
        "task-env": (lambda: hf.task_actions(object(), TOKENIZER), TypeError, "env"),
        "task-tokenizer": (
            lambda: hf.task_actions(TokenTask, None),
            TypeError,
            "tokenizer",
        ),
        "name_or_path": (lambda: hf.from_pretrained(3), TypeError, "name_or_path"),
        "env-and-actions": (
            lambda: hf.from_pretrained("x", env=TokenTask, actions=["1"]),
            ValueError,
            "env or actions",
        ),
    }


BAD = _bad_calls()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_naming_the_argument(case):
    call, error, name = BAD[case]
    with pytest.raises(error, match=name):
        call()


CORE = """
import importlib
import pkgutil
import sys

import plainrl

names = [m.name for m in pkgutil.walk_packages(plainrl.__path__, "plainrl.")]
for name in names:
    if name not in ("plainrl.hf", "plainrl.__main__"):  # __main__ runs the CLI
        importlib.import_module(name)
print(len(names), sorted(m for m in ("transformers", "tokenizers") if m in sys.modules))
"""


def test_the_core_package_never_imports_transformers():
    result = subprocess.run(
        [sys.executable, "-c", CORE], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    count, imported = result.stdout.split(maxsplit=1)
    assert int(count) > 10 and imported.strip() == "[]", result.stdout


WORKER = """
import os
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from plainrl import hf
from plainrl.engine import Algorithm, Budget, train
from plainrl.envs.tokens import CHARS, EOS, PAD
from plainrl.generate import rollout_tokens
from plainrl.runs import Distributed
from plainrl.tasks import TaskConfig

torch.set_num_threads(1)
rank = int(os.environ["RANK"])
first = []


def sample(env, policy):  # keep this rank's first batch of answers
    traj = rollout_tokens(env, policy)
    if not first:
        first.append(traj.actions.clone())
    return traj


tokenizer = hf.char_tokenizer(CHARS[:EOS])
torch.manual_seed(rank)  # other weights on each rank: DDP starts them from rank 0's
config = GPT2Config(vocab_size=13, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                    bos_token_id=EOS, eos_token_id=EOS, pad_token_id=PAD)
policy = hf.HFPolicy(GPT2LMHeadModel(config), tokenizer, device="cpu")
initial = [p.detach().clone() for p in policy.parameters()]
run = train(
    TaskConfig(name="tokens", num_envs=64, answer_len=1, group_size=4),
    policy, Algorithm(lr=1e-2), Budget(max_updates=3, stop_when_solved=False),
    device="cpu", sample=sample, hooks=[Distributed(timeout_s=60)],
)
params = [p.detach().clone() for p in policy.parameters()]
torch.save({"initial": initial, "params": params, "first": first[0],
            "rows": run.state.rows},
           f"{sys.argv[1]}/rank{rank}.pt")
"""


def test_two_processes_keep_identical_ranks(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*torchrun, "--nproc_per_node=2", str(tmp_path / "worker.py")]
    result = subprocess.run(
        [*command, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert not torch.equal(rank0["first"], rank1["first"])  # each its own answers
    assert all(torch.equal(a, b) for a, b in zip(rank0["params"], rank1["params"]))
    # the ranks started apart: DDP gave them rank 0's weights, then equal steps
    assert not torch.equal(rank0["initial"][0], rank1["initial"][0])
    assert not torch.equal(rank0["initial"][0], rank0["params"][0])  # it trained
    rows = [
        [{k: v for k, v in row.items() if k != "wall_s"} for row in rank["rows"]]
        for rank in (rank0, rank1)
    ]
    assert len(rows[0]) == 3 and rows[0] == rows[1]  # the same gathered metrics


def test_one_forward_pass_reads_an_hf_policy(policy):
    "Chapter 8's WholeAnswers serves an HFPolicy: every step's log-prob in one pass."
    task = TokenTask(16, answer_len=4, device="cpu", seed=3, group_size=4, stop=True)
    torch.manual_seed(5)
    traj = rollout_tokens(task, policy)
    with torch.no_grad():
        per_step = policy(traj.obs).log_prob(traj.actions)
        whole = WholeAnswers(policy, task.prompt_len)(traj.obs)
    m = traj.mask
    torch.testing.assert_close(
        whole.log_prob(traj.actions)[m], per_step[m], rtol=0, atol=1e-5
    )
