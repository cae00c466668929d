"""Start-up time of the commands that never evaluate: ``mill --help``, ``mill ls``, ``mill collect``.

Each command runs as a fresh process (``python -m mill.cli``) ``--repeat`` times with its output going to a
pipe; the script prints the median and the fastest wall time beside the 2.2 s every one of them took while
torch was imported at start-up (idle 2-core machine), beside the same command run now with torch imported
first (what it would cost today under the same load: a shared machine makes every figure slower), and
which heavy libraries each one loaded (it should be none).
  python benchmarks/startup.py --repeat 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Wall time of each command before torch left its import path (2-core development machine).
BASELINE_S = 2.2
HEAVY = ("torch", "transformers", "open_clip", "matplotlib")
ENV = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
WITH_TORCH = "import sys, torch; from mill.cli.main import main; main(sys.argv[1:])"
PROBE = """
import json, sys
from mill.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))), file=sys.stderr)
"""


def _results_dir(root: Path) -> Path:
    """A results directory holding a real run: the bundled demo on a few samples."""
    demo = ["eval", "clip[path=mill-shapes,pretrained=mill-shapes]", "shapes", "--limit", "12", "--quiet"]
    subprocess.run([sys.executable, "-m", "mill.cli", *demo, "--output_dir", str(root)], env=ENV, check=True)
    return root


def _time(command: list[str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, env=ENV, check=True)
        times.append(time.perf_counter() - start)
    return times


def _loaded(argv: list[str]) -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv], capture_output=True, text=True, env=ENV, check=False
    )
    loaded: list[str] = json.loads(probe.stderr.strip().splitlines()[-1])
    return loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="Runs per command (default 5).")
    args = parser.parse_args()
    results = _results_dir(Path(tempfile.mkdtemp(prefix="mill-bench-startup-")))
    commands = {
        "mill --help": ["--help"],
        "mill ls": ["ls"],
        "mill collect": ["collect", "--output_dir", str(results), "--all"],
    }
    header = ("command", "median", "fastest", "baseline (torch at start-up)", "same now, torch first", "heavy libs")
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|")
    for name, argv in commands.items():
        times = _time([sys.executable, "-m", "mill.cli", *argv], args.repeat)
        with_torch = statistics.median(_time([sys.executable, "-c", WITH_TORCH, *argv], args.repeat))
        median = statistics.median(times)
        print(
            f"| `{name}` | {median:.2f} s | {min(times):.2f} s | {BASELINE_S:.1f} s | {with_torch:.2f} s "
            f"({with_torch / median:.1f}x slower) | {', '.join(_loaded(argv)) or 'none'} |"
        )


if __name__ == "__main__":
    main()
