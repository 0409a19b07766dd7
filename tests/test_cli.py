"""The command line `python -m plainrl train ...`, mostly in process on the slippery
chain (fast): the generated flags, the old invocations, and the exit statuses."""

import csv
import subprocess
import sys

import pytest
import torch

from plainrl.checkpoint import load_checkpoint
from plainrl.cli import EXIT, config, load_policy, main
from plainrl.runs import KEYS


def run_cli(tmp_path, *extra):
    args = ["train", "--task", "tabular", "--device", "cpu", "--seed", "0"]
    return main([*args, "--run-dir", str(tmp_path), "--no-progress", *extra])


def test_solved_run_writes_metrics_and_curve(tmp_path, capsys):
    assert run_cli(tmp_path) == EXIT["solved"] == 0
    assert "solved at update" in capsys.readouterr().out
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:3] == ["update", "env_steps", "wall_s"]
    assert "objective" in rows[0]
    assert [int(row["update"]) for row in rows] == list(range(1, len(rows) + 1))
    assert int(rows[-1]["env_steps"]) == len(rows) * 64 * 4  # 64 copies, horizon 4
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_ran_out_and_resume(tmp_path, capsys):
    assert run_cli(tmp_path, "--max-updates", "2") == 1
    assert "not solved: the budget ran out after 2 updates" in capsys.readouterr().err
    more = ("--max-updates", "4", "--no-stop-when-solved", "--resume")
    assert run_cli(tmp_path, *more) == 1
    with open(tmp_path / "metrics.csv") as f:
        assert len(f.read().splitlines()) == 1 + 4
    assert run_cli(tmp_path / "b", "--max-env-steps", "300") == 1  # 2 x 256 steps
    assert "budget ran out after 2 updates, 512 env steps" in capsys.readouterr().err


def test_old_invocations_still_work(tmp_path, capsys):
    old = ["train", "--env", "tabular", "--variant", "rtg", "--device", "cpu"]
    old += ["--run-dir", str(tmp_path), "--no-progress", "--full-budget"]
    assert main([*old, "--max-updates", "3", "--num-envs", "8", "--lr", "0.1"]) == 1
    assert "after 3 updates, 96 env steps" in capsys.readouterr().err
    more = ["--max-updates", "4", "--num-envs", "8", "--lr", "0.1", "--no-kv-cache"]
    assert main([*old, *more, "--resume"]) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--task", "atari"], "argument --task: invalid choice: 'atari'"),
        (["--env", "atari"], "argument --env: invalid choice: 'atari'"),
        (["--variant", "rtg"], "the following arguments are required: --task"),
        (["--task", "tabular", "--variant", "ppo"], "--variant: invalid choice"),
        (["--task", "tabular", "--device", "gpu0"], "--device: device='gpu0'"),
        (["--task", "tabular", "--device", "meta"], "--device: device='meta' holds"),
        (["--task", "tabular", "--lr", "-1"], "argument --lr: lr must be"),
        (["--task", "tabular", "--lr", "inf"], "argument --lr: lr must be"),
        (["--task", "tabular", "--num-envs", "2.5"], "--num-envs: expected an int"),
        (["--task", "tabular", "--seed", "-1"], "--seed: expected an int in"),
        (["--task", "tabular", "--seed", str(2**64)], "--seed: expected an int in"),
        (["--task", "tabular", "--threads", "100000"], "--threads: expected an int"),
        (["--task", "tabular", "--run-dir", ""], "--run-dir: expected a directory"),
        (["--task", "tabular", "--max-grad-norm", "-1"], "--max-grad-norm:"),
        (["--task", "tabular", "--baseline", "x"], "argument --baseline: baseline"),
        (["--task", "tokens", "--answer-len", "12"], "argument --answer-len:"),
        (["--task", "tokens", "--group-size", "3"], "group_size=3"),
        (["--task", "tabular", "--variant", "rtg", "--baseline", "batch_mean"],
         "--variant rtg sets --baseline none"),
        (["--task", "tabular", "--env", "cartpole"], "--env is the old name"),
    ],
)  # fmt: skip
def test_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", *args])
    assert exit.value.code == 2 and message in capsys.readouterr().err


def test_help_shows_every_flag_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit.value.code == 0
    for flag in ("--returns", "--baseline", "--aggregate", "--max-grad-norm"):
        assert flag in out
    assert "(default: tabular 0.3, cartpole 0.02, tokens 0.001, addition 0.001)" in out
    assert "exit status" in out and "torchrun --nproc_per_node" in out


def test_config_takes_the_tasks_measured_defaults():
    cfg = config("cartpole", lr=0.05, max_updates=3)
    assert cfg.algo.lr == 0.05 and cfg.budget.max_updates == 3
    assert cfg.weights.baseline == "moving_average" and cfg.task.name == "cartpole"
    with pytest.raises(TypeError, match="unknown settings"):
        config("cartpole", learning_rate=1)


def test_exit_statuses_of_failures(tmp_path, capsys, monkeypatch):
    assert run_cli(tmp_path, "--max-updates", "1") == 1
    assert run_cli(tmp_path, "--max-updates", "1") == EXIT["run_dir"]
    assert "already holds a run" in capsys.readouterr().err
    assert run_cli(tmp_path, "--lr", "0.1", "--resume") == EXIT["checkpoint"]
    assert "cannot resume" in capsys.readouterr().err
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert run_cli(tmp_path, "--resume") == EXIT["checkpoint"]
    assert run_cli(tmp_path / "none", "--resume") == EXIT["checkpoint"]
    assert "no checkpoint at" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    assert run_cli(tmp_path / "rank") == EXIT["distributed"]
    assert "incomplete distributed environment" in capsys.readouterr().err
    monkeypatch.delenv("RANK")
    assert run_cli(tmp_path / "m", "--task", "tabular", "--minibatches", "999") == 2


def test_divergence_exits_3(tmp_path, capsys):
    # no exact objective to measure; a step size so large that Adam's first step
    # overflows float32 (non-finite weights are bad input: refused by the loss)
    cartpole = ("--task", "cartpole", "--num-envs", "8", "--lr", "1e38")
    assert run_cli(tmp_path, *cartpole) == EXIT["diverged"]
    err = capsys.readouterr().err
    assert "diverged at update 1" in err and err.count("\n") == 1
    assert "no checkpoint was written" in err


def test_python_dash_m():
    command = [sys.executable, "-m", "plainrl", "train", "--help"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0 and "--max-env-steps" in result.stdout


def test_sample_answers_with_a_runs_policy(tmp_path, capsys):
    "`plainrl sample` rebuilds the policy of a token-task run from its checkpoint."
    args = ["train", "--task", "tokens", "--device", "cpu", "--no-progress"]
    args += ["--run-dir", str(tmp_path), "--max-updates", "2", "--num-envs", "16"]
    assert main(args) == EXIT["unsolved"]
    policy, env = load_policy(tmp_path, "cpu")  # the trained weights, not new ones
    saved = load_checkpoint(tmp_path / "checkpoint.pt", KEYS)["policy"]
    assert all(torch.equal(v, saved[k]) for k, v in policy.state_dict().items())
    assert env.prompt_len == 2 and policy.config["block_size"] == 2 + 2
    ask = ["sample", "--run-dir", str(tmp_path), "--prompt", "7=", "--prompt", "3="]
    assert main([*ask, "--samples", "3", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["7=", "3="]
    assert all(len(line.split()) == 1 + 3 for line in lines)
    assert main([*ask, "--greedy", "--samples", "2", "--device", "cpu"]) == 0
    greedy = capsys.readouterr().out.splitlines()
    assert all(len(set(line.split()[1:])) == 1 for line in greedy)  # one answer
    bad = ["sample", "--run-dir", str(tmp_path), "--prompt", "7=x", "--device", "cpu"]
    assert main(bad) == EXIT["usage"]
    assert "texts holds '7=x'" in capsys.readouterr().err
    assert main(["sample", "--run-dir", str(tmp_path / "none"), "--prompt", "7="]) == 4
    assert run_cli(tmp_path / "chain", "--max-updates", "1") == 1
    chain = ["sample", "--run-dir", str(tmp_path / "chain"), "--prompt", "7="]
    assert main(chain) == EXIT["usage"]
    assert "expected a token task" in capsys.readouterr().err


def test_a_hugging_face_model_trains_from_the_command_line(tmp_path, capsys):
    "--model: a transformers causal LM saved in a directory is the policy."
    hf = pytest.importorskip("plainrl.hf")
    from transformers import GPT2Config, GPT2LMHeadModel

    from plainrl.envs.addition import CHARS, EOS, PAD

    tokenizer = hf.char_tokenizer(CHARS[:EOS])
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16,
                        n_layer=1, n_head=2, bos_token_id=EOS, eos_token_id=EOS,
                        pad_token_id=PAD)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    args = ["train", "--task", "addition", "--model", str(tmp_path / "model")]
    args += ["--device", "cpu", "--no-progress", "--run-dir", str(tmp_path / "run")]
    args += ["--max-updates", "2", "--num-envs", "16", "--group-size", "4"]
    assert main(args) == EXIT["unsolved"]
    ask = ["sample", "--run-dir", str(tmp_path / "run"), "--prompt", "47+385="]
    assert main([*ask, "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("47+385= ")
    tabular = ["train", "--task", "tabular", "--model", str(tmp_path / "model")]
    tabular += ["--device", "cpu", "--run-dir", str(tmp_path / "t")]
    assert main(tabular) == EXIT["usage"]
    assert "--model needs a token task" in capsys.readouterr().err
