"""`make gpu-check`: everything that needs a CUDA GPU, in at most about 5 minutes.

1. the CUDA-only tests (the tests' cases on the `cuda` device);
2. a short training run of each task on the GPU (`plainrl train`, bf16 autocast for
   the transformers: --amp on);
3. the benchmarks' GPU rows: FusedCartPole steps per second up to 1 M copies (per
   step and a compiled rollout), and the language-model engine at a larger batch.

It writes the rows, with the GPU named, to --out (benchmarks/gpu_rows.md), which the
benchmarks page shows once committed. Without CUDA it refuses, and writes nothing: a
CPU figure is never presented as a GPU one."""

import argparse
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = ["tests/test_envs.py", "tests/test_probability.py"]
CUDA_TESTS += ["tests/test_reward.py", "tests/test_checks.py", "tests/test_policy.py"]
TASKS = {  # task: extra arguments of its short run
    "tabular": [],
    "cartpole": ["--compile"],
    "tokens": ["--amp", "on"],
    "addition": ["--amp", "on"],
}


def run(command, seconds):
    "Run `command` (a list) from the repository root; its exit status and seconds."
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, timeout=seconds)
    return done.returncode, time.perf_counter() - start


def cartpole_rows(sizes, K=100, seconds=1.0):
    "FusedCartPole on the GPU: steps per second per step and per rollout of K steps."
    from plainrl.envs.fused import FusedCartPole

    rows = []
    for n in sizes:
        env = FusedCartPole(n, device="cuda", autoreset=True)
        env.reset()
        actions = torch.randint(0, 2, (K, n), device="cuda")
        rates = []
        for call, count in ((lambda: env.step(actions[0]), n),
                            (lambda: env.rollout(actions), n * K)):  # fmt: skip
            call()
            torch.cuda.synchronize()
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                call()
                calls += 1
            torch.cuda.synchronize()
            rates.append(count * calls / (time.perf_counter() - start))
        rows.append(f"| {n:,} | {rates[0] / 1e6:,.1f} M | {rates[1] / 1e6:,.1f} M |")
    return rows


def lm_row(batch_prompts=128):
    "The language-model engine on the addition task at a larger batch, bf16, on CUDA."
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench

    settings = bench.LM(prompts=batch_prompts, updates=20, pretrain_steps=400)
    model, tokenizer = bench.lm_model(settings, 0)
    model = model.to("cuda")
    curve = bench.plainrl_lm(model, tokenizer, settings, 0, device="cuda")
    per_s = curve[-1][1] / curve[-1][0]
    n = settings.group * settings.prompts
    return f"| {n} answers per update | {per_s * n:,.0f} | {per_s:.1f} |"


def main(argv=None):
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gpu_rows.md")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU, and torch sees none here "
              "(torch.cuda.is_available() is False): nothing measured, nothing "
              "written.", file=sys.stderr)  # fmt: skip
        return 2
    gpu = torch.cuda.get_device_name(0)
    start = time.perf_counter()
    status, _ = run([sys.executable, "-m", "pytest", "-q", *CUDA_TESTS, "-k", "cuda"],
                    120)  # fmt: skip
    lines = [f"Measured by `make gpu-check` on {date.today().isoformat()} on an "
             f"**{gpu}** (torch {torch.__version__}).", "",
             f"CUDA-only tests: {'passed' if status == 0 else 'FAILED'}.", "",
             "| task | short run on the GPU | seconds |", "|---|---|---|"]  # fmt: skip
    for task, extra in TASKS.items():
        command = [sys.executable, "-m", "plainrl", "train", "--task", task]
        command += ["--device", "cuda", "--max-updates", "20", "--no-progress"]
        code, seconds = run(command + extra, 90)
        verdict = {0: "solved", 1: "ran (not solved in 20 updates)"}
        lines.append(f"| {task} | {verdict.get(code, f'FAILED ({code})')} | "
                     f"{seconds:.0f} |")  # fmt: skip
    lines += [
        "",
        "FusedCartPole on the GPU, steps per second:",
        "",
        "| copies | per step | rollout of 100 steps |",
        "|---|---|---|",
    ]
    lines += cartpole_rows([4096, 65536, 1_048_576])
    lines += [
        "",
        "The language-model engine (section 3's task and model, bf16):",
        "",
        "| batch | samples/s | updates/s |",
        "|---|---|---|",
        lm_row(),
    ]
    lines += ["", f"`make gpu-check` took {(time.perf_counter() - start) / 60:.1f} "
              "minutes."]  # fmt: skip
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}: commit it, and `make bench` shows it on the page")
    return 0 if status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
