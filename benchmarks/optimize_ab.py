"""modelport's optimizer tool time, an earlier commit vs the working tree, side by side.

Usage: .venv/bin/python benchmarks/optimize_ab.py --base REV [--models a,b] [--runs 5]

The earlier commit is checked out in a temporary git worktree and imported from there (same
virtual environment, same peer models as benchmarks/optimize_vs_peers.py). For each model, with
verification on and off, both versions run alternately in fresh subprocesses (the order flips
every run, so drift on a shared machine hits both alike); the table gives each one's median
*tool s* (the optimize call alone, as in optimize_vs_peers.py) and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _peer_models import BUILDERS, Case  # noqa: E402


def tool_seconds(root: Path, case: Case, out: Path, verify: bool) -> float:
    options = {
        "dims": case.dims,
        "int_ranges": {k: list(v) for k, v in case.int_ranges.items()},
        "kwargs": {} if verify else {"verify": False},
    }
    command = [sys.executable, str(root / "benchmarks/optimize_vs_peers.py"), "--child", "modelport"]
    command += [str(case.path), str(out), json.dumps(options)]
    env = dict(os.environ, PYTHONPATH=str(root / "src"))
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env, check=False)
    if "@@RESULT " not in done.stdout:
        raise SystemExit(f"{root.name} failed on {case.path.name}:\n{done.stderr[-2000:]}")
    return float(json.loads(done.stdout.split("@@RESULT ", 1)[1])["tool_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--models", default=",".join(BUILDERS), help=f"comma-separated, from: {', '.join(BUILDERS)}")
    parser.add_argument("--runs", type=int, default=5, help="runs of each version per model and mode")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)} — choose from {', '.join(BUILDERS)}")
    with tempfile.TemporaryDirectory(prefix="modelport-ab-") as tmp:
        work = Path(tmp)
        base = work / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True)
        try:
            trees = {"base": base, "current": ROOT}
            print(f"| model | verification | {args.base} s | working tree s | speed-up |")
            print("|---|---|---|---|---|")
            for name in names:
                folder = work / name
                folder.mkdir()
                case = BUILDERS[name](folder)
                for verify in (True, False):
                    times: dict[str, list[float]] = {"base": [], "current": []}
                    for i in range(args.runs):
                        for which in ("base", "current") if i % 2 == 0 else ("current", "base"):
                            times[which].append(tool_seconds(trees[which], case, folder / f"{which}.onnx", verify))
                    old, new = statistics.median(times["base"]), statistics.median(times["current"])
                    mode = "verified" if verify else "off"
                    print(f"| {name} | {mode} | {old:.3f} | {new:.3f} | {old / new:.2f}x |", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
