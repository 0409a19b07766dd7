"""Every public function of plainrl.checks, plainrl.policy and plainrl.reward refuses
bad input early, with a TypeError (type, dtype) or a ValueError (shape, range, device,
NaN) whose message names the argument."""

import os
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from plainrl.checks import (
    check,
    check_actions,
    check_int,
    check_logits,
    check_mask,
    check_real,
    check_states,
    check_tensor,
    check_type,
    concrete_device,
    resolve_device,
)
from plainrl.policy import (
    Block,
    CausalSelfAttention,
    KVCache,
    MLPPolicy,
    TabularPolicy,
    TransformerPolicy,
)
from plainrl.reward import check_rewards, discounts, episode_return

torch.manual_seed(0)
TAB = TabularPolicy(3, 2, device="cpu")
MLP = MLPPolicy(4, 2, hidden=8, device="cpu")
LM = TransformerPolicy(7, 6, d_model=8, n_head=2, n_layer=1, device="cpu")
ENV = SimpleNamespace(num_envs=2, n_actions=3, device=torch.device("cpu"))
META_ENV = SimpleNamespace(num_envs=2, n_actions=3, device=torch.device("meta"))
NAN, INF = float("nan"), float("inf")
REWARDS = torch.zeros(2, 3)
GAP = torch.tensor([[True, False, True], [True, True, True]])


def t(*values, dtype=None, device="cpu"):
    return torch.tensor(values, dtype=dtype, device=device)


def zeros(*shape, dtype=torch.float32, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


def ids(*shape, dtype=torch.long, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


def filled_cache(batch_size=2, max_len=4, policy=LM):
    cache = KVCache(policy, batch_size, max_len)
    policy.logits(ids(batch_size, 3), cache)
    return cache


U8, C64 = torch.uint8, torch.complex64
# (name, call, error, regex the message must match: the argument's name)
CASES = [
    # plainrl.checks
    ("resolve_device str", lambda: resolve_device("gpu0"), ValueError, "device"),
    ("resolve_device index", lambda: resolve_device("cuda:x"), ValueError, "device"),
    ("resolve_device int", lambda: resolve_device(3), TypeError, "device"),
    ("resolve_device None", lambda: resolve_device(None), TypeError, "device"),
    ("resolve_device meta", lambda: resolve_device("meta"), ValueError, "no data"),
    (
        "check_type str",
        lambda: check_type("3", "n", int),
        TypeError,
        "n must be an int",
    ),
    (
        "check_type tuple",
        lambda: check_type(None, "path", (str, os.PathLike)),
        TypeError,
        "path must be a str or a PathLike, got NoneType",
    ),
    ("concrete_device", lambda: concrete_device("gpu0"), ValueError, "device"),
    ("check list", lambda: check([True], "m"), TypeError, "ok"),
    ("check float", lambda: check(t(1.0), "m"), TypeError, "ok"),
    (
        "check false",
        lambda: check(t(True, False), "states out"),
        ValueError,
        "states out",
    ),
    ("check_int bool", lambda: check_int(True, "n"), TypeError, "n must"),
    ("check_int float", lambda: check_int(1.0, "n"), TypeError, "n must"),
    ("check_int str", lambda: check_int("3", "n"), TypeError, "n must"),
    ("check_int tensor", lambda: check_int(t(3), "n"), TypeError, "n must"),
    ("check_int zero", lambda: check_int(0, "n"), ValueError, "n must"),
    ("check_int negative", lambda: check_int(-1, "n"), ValueError, "n must"),
    (
        "check_int high",
        lambda: check_int(5, "n", high=4),
        ValueError,
        r"n must.*\[1, 4\]",
    ),
    ("check_int low", lambda: check_int(2, "n", low=3), ValueError, "n must.*>= 3"),
    ("check_real bool", lambda: check_real(True, "g"), TypeError, "g must"),
    ("check_real str", lambda: check_real("0.5", "g"), TypeError, "g must"),
    ("check_real complex", lambda: check_real(1j, "g"), TypeError, "g must"),
    ("check_real tensor", lambda: check_real(t(0.5), "g"), TypeError, "g must"),
    ("check_real None", lambda: check_real(None, "g"), TypeError, "g must"),
    ("check_real nan", lambda: check_real(NAN, "g"), ValueError, "g must"),
    ("check_real inf", lambda: check_real(INF, "g"), ValueError, "g must"),
    ("check_real -inf", lambda: check_real(-INF, "g", None, 1), ValueError, "g must"),
    ("check_real nan range", lambda: check_real(NAN, "g", 0, 1), ValueError, "g must"),
    ("check_real high", lambda: check_real(1.5, "g", 0, 1), ValueError, r"\[0, 1\]"),
    ("check_real low", lambda: check_real(-0.1, "g", 0, 1), ValueError, r"\[0, 1\]"),
    (
        "check_real open low",
        lambda: check_real(0, "g", 0, low_open=True),
        ValueError,
        "> 0",
    ),
    (
        "check_real open high",
        lambda: check_real(1, "g", 0, 1, high_open=True),
        ValueError,
        r"1\)",
    ),
    ("check_tensor list", lambda: check_tensor([1], "x", "int"), TypeError, "x must"),
    (
        "check_tensor int u8",
        lambda: check_tensor(ids(2, dtype=U8), "x", "int"),
        TypeError,
        "x must",
    ),
    (
        "check_tensor int bool",
        lambda: check_tensor(t(True), "x", "int"),
        TypeError,
        "x must",
    ),
    (
        "check_tensor int float",
        lambda: check_tensor(zeros(2), "x", "int"),
        TypeError,
        "x must",
    ),
    (
        "check_tensor int cplx",
        lambda: check_tensor(zeros(2, dtype=C64), "x", "int"),
        TypeError,
        "x",
    ),
    (
        "check_tensor float int",
        lambda: check_tensor(ids(2), "x", "float"),
        TypeError,
        "x must",
    ),
    (
        "check_tensor float cplx",
        lambda: check_tensor(zeros(2, dtype=C64), "x", "float"),
        TypeError,
        "x",
    ),
    (
        "check_tensor float bool",
        lambda: check_tensor(t(True), "x", "float"),
        TypeError,
        "x must",
    ),
    (
        "check_tensor bool float",
        lambda: check_tensor(zeros(2), "x", "bool"),
        TypeError,
        "x must",
    ),
    (
        "check_tensor bool u8",
        lambda: check_tensor(ids(2, dtype=U8), "x", "bool"),
        TypeError,
        "x",
    ),
    (
        "check_tensor shape",
        lambda: check_tensor(zeros(2, 3), "x", "float", (2, 4)),
        ValueError,
        "x has",
    ),
    (
        "check_tensor rank",
        lambda: check_tensor(zeros(2, 3), "x", "float", (2,)),
        ValueError,
        "x has",
    ),
    (
        "check_tensor rank+",
        lambda: check_tensor(zeros(2), "x", "float", (2, None)),
        ValueError,
        "x has",
    ),
    (
        "check_tensor meta",
        lambda: check_tensor(zeros(2, device="meta"), "x", "float"),
        ValueError,
        "x is",
    ),
    (
        "check_tensor device",
        lambda: check_tensor(zeros(2), "x", "float", device=torch.device("meta")),
        ValueError,
        "x is on",
    ),
    (
        "check_tensor kind",
        lambda: check_tensor(zeros(2), "x", "long"),
        ValueError,
        "kind",
    ),
    ("check_states list", lambda: check_states([0], "s", False), TypeError, "s must"),
    (
        "check_states float",
        lambda: check_states(zeros(2), "s", False),
        TypeError,
        "s must",
    ),
    ("check_states long", lambda: check_states(ids(2), "s", True), TypeError, "s must"),
    (
        "check_states u8",
        lambda: check_states(ids(2, dtype=U8), "s", False),
        TypeError,
        "s must",
    ),
    (
        "check_states bool",
        lambda: check_states(t(True), "s", False),
        TypeError,
        "s must",
    ),
    (
        "check_states cplx int",
        lambda: check_states(zeros(2, dtype=C64), "s", False),
        TypeError,
        "s",
    ),
    (
        "check_states cplx",
        lambda: check_states(zeros(2, dtype=C64), "s", True),
        TypeError,
        "s",
    ),
    (
        "check_states trailing",
        lambda: check_states(zeros(2, 3), "s", True, (4,)),
        ValueError,
        "s has",
    ),
    (
        "check_states scalar",
        lambda: check_states(ids(), "s", False),
        ValueError,
        "s has",
    ),
    (
        "check_states empty",
        lambda: check_states(ids(0), "s", False),
        ValueError,
        "s is an empty",
    ),
    (
        "check_states meta",
        lambda: check_states(ids(2, device="meta"), "s", False),
        ValueError,
        "s is",
    ),
    (
        "check_states device",
        lambda: check_states(ids(2), "s", False, device=torch.device("meta")),
        ValueError,
        "s is on",
    ),
    ("check_mask list", lambda: check_mask([[True]], (1, 1), "cpu"), TypeError, "mask"),
    (
        "check_logits nan",
        lambda: check_logits(t(0.0, NAN)),
        FloatingPointError,
        "logits",
    ),
    (
        "check_logits inf",
        lambda: check_logits(t(INF, 0.0)),
        FloatingPointError,
        "logits",
    ),
    (
        "check_mask float",
        lambda: check_mask(zeros(2, 3), (2, 3), "cpu"),
        TypeError,
        "mask",
    ),
    (
        "check_mask u8",
        lambda: check_mask(ids(2, 3, dtype=U8), (2, 3), "cpu"),
        TypeError,
        "mask",
    ),
    (
        "check_mask shape",
        lambda: check_mask(GAP, (2, 4), "cpu"),
        ValueError,
        "mask has shape",
    ),
    (
        "check_mask 1-d",
        lambda: check_mask(t(True, True), (2,), "cpu"),
        ValueError,
        "mask has shape",
    ),
    (
        "check_mask gap",
        lambda: check_mask(GAP, (2, 3), "cpu"),
        ValueError,
        "mask has a gap",
    ),
    (
        "check_mask late start",
        lambda: check_mask(~GAP, (2, 3), "cpu"),
        ValueError,
        "mask has a gap",
    ),
    (
        "check_mask meta",
        lambda: check_mask(GAP.to("meta"), (2, 3), "meta"),
        ValueError,
        "mask is",
    ),
    (
        "check_mask device",
        lambda: check_mask(GAP, (2, 3), torch.device("meta")),
        ValueError,
        "mask is on",
    ),
    (
        "check_mask name",
        lambda: check_mask(zeros(2, 3), (2, 3), "cpu", "done"),
        TypeError,
        "done",
    ),
    ("check_actions list", lambda: check_actions([0, 1], ENV), TypeError, "action"),
    (
        "check_actions u8",
        lambda: check_actions(ids(2, dtype=U8), ENV),
        TypeError,
        "action",
    ),
    (
        "check_actions bool",
        lambda: check_actions(t(True, False), ENV),
        TypeError,
        "action",
    ),
    ("check_actions float", lambda: check_actions(zeros(2), ENV), TypeError, "action"),
    (
        "check_actions cplx",
        lambda: check_actions(zeros(2, dtype=C64), ENV),
        TypeError,
        "action",
    ),
    (
        "check_actions shape",
        lambda: check_actions(ids(3), ENV),
        ValueError,
        "action has",
    ),
    (
        "check_actions rank",
        lambda: check_actions(ids(2, 1), ENV),
        ValueError,
        "action has",
    ),
    (
        "check_actions meta",
        lambda: check_actions(ids(2, device="meta"), META_ENV),
        ValueError,
        "action",
    ),
    (
        "check_actions device",
        lambda: check_actions(ids(2), META_ENV),
        ValueError,
        "action is on",
    ),
    (
        "check_actions high",
        lambda: check_actions(t(0, 3), ENV),
        ValueError,
        r"action.*\[0, 3\)",
    ),
    (
        "check_actions low",
        lambda: check_actions(t(-1, 0), ENV),
        ValueError,
        r"action.*\[0, 3\)",
    ),
    # plainrl.policy: constructors
    (
        "TabularPolicy n_states",
        lambda: TabularPolicy(0, 2, "cpu"),
        ValueError,
        "n_states",
    ),
    (
        "TabularPolicy float",
        lambda: TabularPolicy(2.0, 2, "cpu"),
        TypeError,
        "n_states",
    ),
    (
        "TabularPolicy n_actions",
        lambda: TabularPolicy(2, -1, "cpu"),
        ValueError,
        "n_actions",
    ),
    (
        "TabularPolicy bool",
        lambda: TabularPolicy(2, True, "cpu"),
        TypeError,
        "n_actions",
    ),
    ("TabularPolicy device", lambda: TabularPolicy(2, 2, "gpu0"), ValueError, "device"),
    ("MLPPolicy obs_dim", lambda: MLPPolicy(0, 2, device="cpu"), ValueError, "obs_dim"),
    (
        "MLPPolicy n_actions",
        lambda: MLPPolicy(4, "2", device="cpu"),
        TypeError,
        "n_actions",
    ),
    (
        "MLPPolicy hidden",
        lambda: MLPPolicy(4, 2, hidden=-3, device="cpu"),
        ValueError,
        "hidden",
    ),
    (
        "MLPPolicy hidden bool",
        lambda: MLPPolicy(4, 2, hidden=True, device="cpu"),
        TypeError,
        "hidden",
    ),
    (
        "Transformer vocab",
        lambda: TransformerPolicy(1, 6, device="cpu"),
        ValueError,
        "vocab_size",
    ),
    (
        "Transformer block",
        lambda: TransformerPolicy(7, 0, device="cpu"),
        ValueError,
        "block_size",
    ),
    (
        "Transformer d_model",
        lambda: TransformerPolicy(7, 6, d_model=-1, device="cpu"),
        ValueError,
        "d_model",
    ),
    (
        "Transformer n_head",
        lambda: TransformerPolicy(7, 6, n_head=0, device="cpu"),
        ValueError,
        "n_head",
    ),
    (
        "Transformer n_head float",
        lambda: TransformerPolicy(7, 6, n_head=2.0, device="cpu"),
        TypeError,
        "n_head",
    ),
    (
        "Transformer n_layer",
        lambda: TransformerPolicy(7, 6, n_layer=-1, device="cpu"),
        ValueError,
        "n_layer",
    ),
    (
        "Transformer divisible",
        lambda: TransformerPolicy(7, 6, 10, 3, device="cpu"),
        ValueError,
        "n_head=3",
    ),
    (
        "Transformer fp16",
        lambda: TransformerPolicy(7, 6, compute_dtype=torch.float16, device="cpu"),
        ValueError,
        "compute_dtype",
    ),
    (
        "Transformer dtype str",
        lambda: TransformerPolicy(7, 6, compute_dtype="bf16", device="cpu"),
        TypeError,
        "compute_dtype",
    ),
    (
        "Transformer device",
        lambda: TransformerPolicy(7, 6, device="gpu0"),
        ValueError,
        "device",
    ),
    ("CausalSelfAttention", lambda: CausalSelfAttention(10, 3), ValueError, "n_head=3"),
    ("CausalSelfAttention 0", lambda: CausalSelfAttention(8, 0), ValueError, "n_head"),
    ("Block d_model", lambda: Block(0, 1), ValueError, "d_model"),
    # plainrl.policy: forward passes
    ("Tabular list", lambda: TAB([0, 1]), TypeError, "states"),
    ("Tabular float", lambda: TAB(zeros(2)), TypeError, "states"),
    ("Tabular u8", lambda: TAB(ids(2, dtype=U8)), TypeError, "states"),
    ("Tabular bool", lambda: TAB(t(True, False)), TypeError, "states"),
    ("Tabular cplx", lambda: TAB(zeros(2, dtype=C64)), TypeError, "states"),
    ("Tabular high", lambda: TAB(t(0, 3)), ValueError, r"states.*\[0, 3\)"),
    ("Tabular low", lambda: TAB(t(-1)), ValueError, r"states.*\[0, 3\)"),
    ("Tabular empty", lambda: TAB(ids(0)), ValueError, "states is an empty"),
    ("Tabular meta", lambda: TAB(ids(2, device="meta")), ValueError, "states is"),
    ("MLP list", lambda: MLP([0.0] * 4), TypeError, "obs"),
    ("MLP long", lambda: MLP(ids(2, 4)), TypeError, "obs"),
    ("MLP float64", lambda: MLP(zeros(2, 4, dtype=torch.float64)), TypeError, "obs"),
    ("MLP float16", lambda: MLP(zeros(2, 4, dtype=torch.float16)), TypeError, "obs"),
    ("MLP cplx", lambda: MLP(zeros(2, 4, dtype=C64)), TypeError, "obs"),
    ("MLP width", lambda: MLP(zeros(2, 3)), ValueError, r"obs has.*\[batch..., 4\]"),
    ("MLP empty", lambda: MLP(zeros(0, 4)), ValueError, "obs is an empty"),
    ("MLP meta", lambda: MLP(zeros(2, 4, device="meta")), ValueError, "obs is"),
    ("logits list", lambda: LM.logits([[0, 1]]), TypeError, "tokens"),
    ("logits float", lambda: LM.logits(zeros(1, 3)), TypeError, "tokens"),
    ("logits u8", lambda: LM.logits(ids(1, 3, dtype=U8)), TypeError, "tokens"),
    (
        "logits bool",
        lambda: LM.logits(ids(1, 3, dtype=torch.bool)),
        TypeError,
        "tokens",
    ),
    ("logits 1-d", lambda: LM.logits(ids(3)), ValueError, r"tokens has.*\[B, L\]"),
    (
        "logits 3-d",
        lambda: LM.logits(ids(1, 1, 3)),
        ValueError,
        r"tokens has.*\[B, L\]",
    ),
    ("logits no rows", lambda: LM.logits(ids(0, 3)), ValueError, "tokens has"),
    ("logits no columns", lambda: LM.logits(ids(1, 0)), ValueError, "tokens has"),
    ("logits high", lambda: LM.logits(t([0, 7])), ValueError, r"tokens.*\[0, 7\)"),
    ("logits low", lambda: LM.logits(t([0, -1])), ValueError, r"tokens.*\[0, 7\)"),
    ("logits long", lambda: LM.logits(ids(1, 7)), ValueError, "tokens has.*<= 6"),
    (
        "logits meta",
        lambda: LM.logits(ids(1, 3, device="meta")),
        ValueError,
        "tokens is",
    ),
    ("logits cache", lambda: LM.logits(ids(1, 3), cache="kv"), TypeError, "cache"),
    (
        "forward temperature 0",
        lambda: LM(ids(1, 3), temperature=0),
        ValueError,
        "temperature",
    ),
    (
        "forward temperature < 0",
        lambda: LM(ids(1, 3), temperature=-1),
        ValueError,
        "temperature",
    ),
    (
        "forward temperature nan",
        lambda: LM(ids(1, 3), temperature=NAN),
        ValueError,
        "temperature",
    ),
    (
        "forward temperature inf",
        lambda: LM(ids(1, 3), temperature=INF),
        ValueError,
        "temperature",
    ),
    (
        "forward temperature str",
        lambda: LM(ids(1, 3), temperature="1"),
        TypeError,
        "temperature",
    ),
    (
        "forward temperature bool",
        lambda: LM(ids(1, 3), temperature=True),
        TypeError,
        "temperature",
    ),
    (
        "forward temperature 1e-45",
        lambda: LM(ids(1, 3), temperature=1e-45),
        ValueError,
        "temperature",
    ),
    ("forward scalar", lambda: LM(ids()), ValueError, "tokens has"),
    ("forward empty", lambda: LM(ids(0)), ValueError, "tokens has"),
    ("forward float", lambda: LM(zeros(1, 3)), TypeError, "tokens"),
    ("forward meta", lambda: LM(ids(1, 3, device="meta")), ValueError, "tokens is"),
    ("KVCache policy", lambda: KVCache(MLP, 2, 4), TypeError, "policy"),
    ("KVCache batch_size", lambda: KVCache(LM, 0, 4), ValueError, "batch_size"),
    ("KVCache max_len", lambda: KVCache(LM, 2, 1.5), TypeError, "max_len"),
    ("cache full", lambda: LM.logits(ids(2, 2), filled_cache()), ValueError, "max_len"),
    (
        "cache rows",
        lambda: LM.logits(ids(3, 1), filled_cache()),
        ValueError,
        "batch_size",
    ),
    (
        "cache policy",
        lambda: TransformerPolicy(7, 6, 8, 2, 1, "cpu").logits(
            ids(2, 1), filled_cache()
        ),
        ValueError,
        "cache",
    ),
    (
        "cache block_size",
        lambda: LM.logits(ids(2, 4), filled_cache(max_len=9)),
        ValueError,
        "block_size",
    ),
    # plainrl.reward
    ("rewards list", lambda: episode_return([[0.0]]), TypeError, "rewards"),
    ("rewards long", lambda: episode_return(ids(2, 3)), TypeError, "rewards"),
    ("rewards u8", lambda: episode_return(ids(2, 3, dtype=U8)), TypeError, "rewards"),
    (
        "rewards bool",
        lambda: episode_return(ids(2, 3, dtype=torch.bool)),
        TypeError,
        "rewards",
    ),
    (
        "rewards cplx",
        lambda: episode_return(zeros(2, 3, dtype=C64)),
        TypeError,
        "rewards",
    ),
    (
        "rewards 1-d",
        lambda: episode_return(zeros(3)),
        ValueError,
        r"rewards has.*\[B, T\]",
    ),
    ("rewards empty", lambda: episode_return(zeros(0, 3)), ValueError, "rewards has"),
    (
        "rewards nan",
        lambda: episode_return(t([0.0, NAN])),
        ValueError,
        "rewards must be finite",
    ),
    (
        "rewards inf",
        lambda: episode_return(t([INF, 0.0])),
        ValueError,
        "rewards must be finite",
    ),
    (
        "rewards meta",
        lambda: episode_return(zeros(2, 3, device="meta")),
        ValueError,
        "rewards is",
    ),
    (
        "return overflow",
        lambda: episode_return(torch.full((1, 2), 4e4, dtype=torch.float16)),
        ValueError,
        "return overflows",
    ),
    (
        "return overflow f32",
        lambda: episode_return(torch.full((1, 2), 3e38)),
        ValueError,
        "return overflows",
    ),
    ("gamma high", lambda: episode_return(REWARDS, 1.01), ValueError, "gamma"),
    ("gamma nan", lambda: episode_return(REWARDS, NAN), ValueError, "gamma"),
    ("gamma complex", lambda: episode_return(REWARDS, 0.5j), TypeError, "gamma"),
    ("gamma tensor", lambda: check_rewards(REWARDS, t(0.9)), TypeError, "gamma"),
    (
        "mask u8",
        lambda: episode_return(REWARDS, mask=ids(2, 3, dtype=U8)),
        TypeError,
        "mask",
    ),
    (
        "mask shape",
        lambda: episode_return(REWARDS, mask=GAP[:, :2]),
        ValueError,
        "mask has",
    ),
    (
        "mask gap",
        lambda: check_rewards(REWARDS, mask=GAP),
        ValueError,
        "mask has a gap",
    ),
    (
        "mask meta",
        lambda: episode_return(REWARDS, mask=GAP.to("meta")),
        ValueError,
        "mask is",
    ),
    ("discounts T 0", lambda: discounts(0, 0.9), ValueError, "T must"),
    ("discounts T -1", lambda: discounts(-1, 0.9), ValueError, "T must"),
    ("discounts T float", lambda: discounts(2.0, 0.9), TypeError, "T must"),
    ("discounts T bool", lambda: discounts(True, 0.9), TypeError, "T must"),
    ("discounts gamma", lambda: discounts(3, 1.5), ValueError, "gamma"),
    ("discounts gamma nan", lambda: discounts(3, NAN), ValueError, "gamma"),
    ("discounts gamma str", lambda: discounts(3, "0.9"), TypeError, "gamma"),
    ("discounts dtype long", lambda: discounts(3, 0.9, torch.long), TypeError, "dtype"),
    ("discounts dtype str", lambda: discounts(3, 0.9, "float32"), TypeError, "dtype"),
    (
        "discounts device",
        lambda: discounts(3, 0.9, device="gpu0"),
        ValueError,
        "device",
    ),
]


@pytest.mark.parametrize(
    "call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(call, error, message):
    with torch.no_grad(), pytest.raises(error, match=message):  # no_grad: KVCache
        call()


def test_every_public_function_has_a_bad_input_case():
    import plainrl.checks
    import plainrl.policy
    import plainrl.reward

    names = (
        " ".join(c[0] for c in CASES)
        + " "
        + " ".join(c[1].__code__.co_names.__repr__() for c in CASES)
    )
    for module in (plainrl.checks, plainrl.policy, plainrl.reward):
        for name in module.__all__:
            assert name in names, f"no bad-input case for {module.__name__}.{name}"


def test_check_int_and_check_real_return_plain_numbers():
    assert check_int(np.int64(3), "n") == 3 and type(check_int(np.int64(3), "n")) is int
    assert check_int(0, "n", low=0) == 0 and check_int(-5, "n", low=None) == -5
    assert check_int(4, "n", high=4) == 4
    assert check_real(1, "g", 0, 1) == 1.0 and type(check_real(1, "g")) is float
    assert check_real(Fraction(1, 2), "g", 0, 1, low_open=True) == 0.5
    assert check_real(np.float32(0.25), "g") == 0.25
    assert (
        check_type(True, "b", bool) is True and check_type("x", "p", (str, int)) == "x"
    )


def test_check_tensor_accepts_what_it_should():
    x = ids(2, 3, dtype=torch.int32)
    assert check_tensor(x, "x", "int", shape=(2, None), device="cpu") is x
    assert check_tensor(zeros(2), "x", "float", device=torch.device("cpu")) is not None
    check_tensor(zeros(0), "x", "float", shape=(0,))
    check_tensor(t(True), "x", "bool", shape=(1,))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        check_tensor(zeros(1, dtype=dtype), "x", "float")
    check_states(zeros(2, 5, 4), "obs", True, trailing=(4,), device="cpu")
    check_states(t(0, 1), "s", False)


def test_check_mask_and_actions_accept_what_they_should():
    mask = torch.tensor([[True, True, False], [False, False, False], [True] * 3])
    assert check_mask(mask, (3, 3), "cpu") is mask
    check_actions(t(0, 2), ENV)
    check_actions(t(0, 2, dtype=torch.int32), ENV)
    check_actions(t(5, -1), ENV, values=False)  # the range is the caller's business


def test_resolve_and_concrete_device():
    assert (
        resolve_device("cpu")
        == resolve_device(torch.device("cpu"))
        == torch.device("cpu")
    )
    auto = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == auto
    assert concrete_device("cpu") == torch.device("cpu")
    if torch.cuda.is_available():
        assert concrete_device("cuda").index is not None


def test_check_passes_and_raises():
    check(t(True, True), "never")
    check(torch.tensor(True), "never")
    with pytest.raises(ValueError, match="states out"):
        check(torch.tensor(False), "states out")


def test_a_diverged_policy_stops_with_a_floating_point_error():
    broken = TabularPolicy(3, 2, device="cpu")
    with torch.no_grad():
        broken.logits[1, 0] = INF
    broken(t(0, 2))  # the rows that are finite still work
    with pytest.raises(FloatingPointError, match="diverged"):
        broken(t(1))
    lm = TransformerPolicy(7, 6, d_model=8, n_head=2, n_layer=1, device="cpu")
    with torch.no_grad():
        lm.head.bias[0] = INF
    with pytest.raises(FloatingPointError, match="diverged"):
        lm(ids(1, 3))
