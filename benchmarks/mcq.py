"""Multiple-choice throughput: hf generation batched vs batch size 1, letter likelihood vs generation on the same
questions, and vllm vs hf where vLLM is installed.

Default: the tiny random-weight VLM (``mill.backends.llm.tiny.write_tiny_vlm``, no download) on CPU, answering
the ``imagenet_mcq`` question of specs/imagenet.toml about 64 real photos. Both generation runs get identical
inputs and greedy decoding, so their answers must agree; the script checks it. The likelihood run
(``imagenet_mcq_likelihood``) asks exactly the same questions (the script checks the prompts) and reads the
option letters' probabilities after one forward pass per image, instead of decoding up to ``max_new_tokens``
(32). On a GPU machine, with a real model:
  python benchmarks/mcq.py --path Qwen/Qwen2-VL-2B-Instruct --device cuda --dtype bfloat16 --n_images 512
Timings exclude model loading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from attrs import frozen
from sample_shards import DEFAULT_SAMPLE_DIR, DEFAULT_WORK_DIR, photo_shards

from mill.core.backend import RunContext
from mill.core.kinds import generative_mcq, likelihood_mcq
from mill.core.kinds.generative_mcq import McqTask
from mill.core.kinds.likelihood_mcq import LikelihoodMcqTask
from mill.core.mcq import parse_answer
from mill.core.plugins import load_plugin
from mill.core.progress import SilentProgress
from mill.core.sample import ReadOptions
from mill.core.specfile import load_spec
from mill.data import ShardDataset, open_dataset, synthetic_dataset_spec

SPEC = Path(__file__).resolve().parents[1] / "specs" / "imagenet.toml"


def main() -> None:
    args = _parse()
    scratch = Path(tempfile.mkdtemp(prefix="mill-bench-mcq-"))
    path = args.path or tiny_vlm(scratch)
    data = photo_dataset(args, scratch)
    task = imagenet_mcq_task()
    print(
        f"machine: {os.cpu_count()} CPU cores, device {args.device}; model {args.path or 'tiny random VLM'}; "
        f"{len(data)} images, max_new_tokens {task.max_new_tokens}\n"
    )

    common = {"path": path, "dtype": args.dtype, "device": args.device, "num_workers": args.num_workers}
    hf = load_plugin("hf").plugin.load({**common, "batch_size": args.batch_size}, _context(scratch))
    _run(hf, task, _head(data, 2))  # warm-up, untimed
    batched, answers = _run(hf, task, data)
    hf_one = load_plugin("hf").plugin.load({**common, "batch_size": 1}, _context(scratch))
    single, single_answers = _run(hf_one, task, data)
    same = sum(a == b for a, b in zip(answers, single_answers, strict=True))
    print(f"hf batch size {args.batch_size}: {_rate(len(data), batched)}")
    print(f"hf batch size 1: {_rate(len(data), single)}")
    print(f"batched vs batch size 1: {single / batched:.2f}x; identical answers for {same} of {len(data)} samples")

    letters = imagenet_likelihood_task()
    _run_letters(hf, letters, _head(data, 2))  # warm-up, untimed
    _, choices = _run_letters(hf, letters, data)
    n_parsed, agree = _compare(task, choices, answers)
    tokenizer = hf.chat_processor.tokenizer
    length = statistics.mean(len(tokenizer(answer, add_special_tokens=False)["input_ids"]) for answer in answers)
    # Interleaved, so both see the same machine load; medians of --repeat runs each. "Model calls" is the time
    # inside the backend's batch calls (processor and model); the rest is the loader and the loop around them.
    generation, likelihood = [], []
    for _ in range(args.repeat):
        generation.append(_timings(hf, "generate", lambda: _run(hf, task, data)[0]))
        likelihood.append(_timings(hf, "next_token_logprobs", lambda: _run_letters(hf, letters, data)[0]))
    (gen_total, gen_model), (lik_total, lik_model) = _medians(generation), _medians(likelihood)
    print(
        f"\nhf generation, batch size {args.batch_size} (answers ~{length:.0f} tokens re-tokenized), median of "
        f"{args.repeat}: {_rate(len(data), gen_total)}; model calls {gen_model:.2f} s"
    )
    print(f"hf letter likelihood, same questions: {_rate(len(data), lik_total)}; model calls {lik_model:.2f} s")
    print(
        f"likelihood vs generation: {gen_total / lik_total:.2f}x end to end, {gen_model / lik_model:.2f}x in model "
        f"calls (target >= 5x); the likeliest letter is the parsed answer for {agree} of {n_parsed} parsed answers"
    )

    try:
        import vllm  # noqa: F401
    except ImportError:
        print(
            "\nvllm: not installed here, so vllm vs hf is not measured (pip install ./packages/mill-backends-llm[vllm])"
        )
        return
    engine = load_plugin("vllm").plugin.load({"path": path, "dtype": args.dtype}, _context(scratch))
    fast, _ = _run(engine, task, data)
    print(f"\nvllm: {_rate(len(data), fast)} -> {batched / fast:.2f}x hf batched")
    fast_letters, _ = _run_letters(engine, letters, data)
    print(f"vllm letter likelihood: {_rate(len(data), fast_letters)} -> {fast / fast_letters:.2f}x vllm generation")


def tiny_vlm(scratch: Path) -> str:
    """The tiny random-weight VLM, written under ``scratch``."""
    from mill.backends.llm.tiny import write_tiny_vlm

    return str(write_tiny_vlm(scratch / "vlm"))


def photo_dataset(args: argparse.Namespace, scratch: Path) -> ShardDataset:
    """``args.n_images`` real photos (``args.sample_dir``) as ImageNet-layout shards, opened as a data set."""
    root = photo_shards(Path(args.sample_dir), Path(args.work_dir), args.n_images)
    return open_dataset(
        synthetic_dataset_spec(root, n_samples=args.n_images),
        n_classes=1000,
        options=ReadOptions(allow_incomplete=True, cache_dir=scratch / "cache"),
    )


def imagenet_mcq_task() -> McqTask:
    """The ``imagenet_mcq`` variant of specs/imagenet.toml as a task (questions seeded by the spec's seed)."""
    spec = load_spec(SPEC)
    task: McqTask = generative_mcq.kind.build_task(spec, "imagenet_mcq", spec.variants["imagenet_mcq"], spec.seed)
    return task


def imagenet_likelihood_task() -> LikelihoodMcqTask:
    """The ``imagenet_mcq_likelihood`` variant as a task, its options drawn under the generative variant's name so
    that both tasks ask the same question about each image."""
    spec = load_spec(SPEC)
    variant = spec.variants["imagenet_mcq_likelihood"]
    task: LikelihoodMcqTask = likelihood_mcq.kind.build_task(spec, "imagenet_mcq", variant, spec.seed)
    return task


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", default=None, help="a transformers VLM (default: the tiny random VLM)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on CUDA")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_workers", type=int, default=1)
    parser.add_argument("--n_images", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of generation and likelihood each")
    parser.add_argument("--sample_dir", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR), help="where converted shards are cached")
    args = parser.parse_args()
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    return args


def _context(scratch: Path) -> RunContext:
    return RunContext(cache_dir=scratch / "cache", progress=SilentProgress())


def _head(data: ShardDataset, n: int) -> ShardDataset:
    return data.subset(data.keys[:n])


def _run(backend: Any, task: McqTask, data: ShardDataset) -> tuple[float, list[str]]:
    """Seconds to answer every sample, and the answers in key order."""
    start = time.perf_counter()
    results = list(backend.run_mcq(task, data))
    seconds = time.perf_counter() - start
    answers = dict(zip((k for r in results for k in r.keys), (a for r in results for a in r.responses), strict=True))
    return seconds, [answers[k] for k in sorted(answers)]


@frozen
class LetterChoice:
    """One sample's letter-likelihood result: its gold class, the prompt sent and the likeliest letter."""

    gold: int
    prompt: str
    letter: str


def _run_letters(backend: Any, task: LikelihoodMcqTask, data: ShardDataset) -> tuple[float, dict[str, LetterChoice]]:
    """Seconds to score every sample, and each sample's choice by key."""
    start = time.perf_counter()
    results = list(backend.run_likelihood_mcq(task, data))
    seconds = time.perf_counter() - start
    return seconds, {
        key: LetterChoice(gold, prompt, task.letters[max(range(len(scores)), key=scores.__getitem__)])
        for result in results
        for key, gold, prompt, scores in zip(
            result.keys, result.golds, result.prompts, result.letter_logprobs, strict=True
        )
    }


def _compare(task: McqTask, choices: dict[str, LetterChoice], answers: list[str]) -> tuple[int, int]:
    """How many generated answers (in key order) parse to a letter, and how many of those are the likeliest
    letter. Raises SystemExit when the two tasks asked different questions."""
    parsed = agree = 0
    for key, answer in zip(sorted(choices), answers, strict=True):
        choice = choices[key]
        question = task.question(key, choice.gold)
        if question.prompt != choice.prompt:
            raise SystemExit(f"sample {key}: the likelihood task asked another question than the generative one")
        letter = parse_answer(answer, [task.classnames[i] for i in question.option_indices], question.letters)
        parsed += letter is not None
        agree += letter == choice.letter
    return parsed, agree


def _timings(backend: Any, method: str, run: Callable[[], float]) -> tuple[float, float]:
    """Seconds ``run`` takes end to end, and seconds of it spent inside ``backend.<method>``."""
    inner = 0.0
    call = getattr(backend, method)

    def timed(*args: Any, **kwargs: Any) -> Any:
        nonlocal inner
        start = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            inner += time.perf_counter() - start

    setattr(backend, method, timed)  # the instance attribute shadows the method for this run only
    try:
        total = run()
    finally:
        delattr(backend, method)
    return total, inner


def _medians(timings: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t for t, _ in timings), statistics.median(m for _, m in timings)


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.2f} samples/s ({seconds:.1f} s)"


if __name__ == "__main__":
    main()
