"""How DVC copes with a 10,000-video raw folder: time `dvc status` and a no-op `dvc repro`.

Builds a temporary git + DVC repo whose one stage writes N small files into an
output folder (as the download stage writes data/raw/videos), runs it once,
then times what a user pays on every later call. Target: <= 2 s each at 10k.

    .venv/bin/python benchmarks/dvc_scale.py [--n 10000] [--bytes 2048] [--persist]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEN = """\
import os, sys
from pathlib import Path
n, size = int(sys.argv[1]), int(sys.argv[2])
out = Path("data/raw/videos"); out.mkdir(parents=True, exist_ok=True)
for i in range(n):
    p = out / f"vid_{i:05d}.mp4"
    if not p.exists():
        p.write_bytes(i.to_bytes(4, "little") * (size // 4))
"""


def run(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed: {proc.stderr or proc.stdout}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="files in the output folder")
    ap.add_argument("--bytes", type=int, default=2048, help="size of each file")
    ap.add_argument("--persist", action="store_true", help="declare the output persist: true (as the download stage)")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls of each command (the median is reported)")
    args = ap.parse_args()
    dvc = str(Path(sys.executable).with_name("dvc"))
    tmp = Path(tempfile.mkdtemp(prefix="dvc_scale_"))
    try:
        run(["git", "init", "-q"], tmp)
        run([dvc, "init", "-q"], tmp)
        run([dvc, "config", "core.analytics", "false"], tmp)
        (tmp / "gen.py").write_text(GEN)
        out = "--outs-persist" if args.persist else "--outs"
        run([dvc, "stage", "add", "-q", "-n", "download", out, "data/raw/videos",
             f"python gen.py {args.n} {args.bytes}"], tmp)
        env_path = os.environ.get("PATH", "")
        os.environ["PATH"] = f"{Path(sys.executable).parent}:{env_path}"
        first = run([dvc, "repro", "-q"], tmp)
        results = {"first repro (hash + cache 10k files)": first}
        for name, cmd in (("dvc status", [dvc, "status", "-q"]), ("no-op dvc repro", [dvc, "repro", "-q"])):
            times = sorted(run(cmd, tmp) for _ in range(args.repeat))
            results[name] = times[len(times) // 2]
        baseline = sorted(run([dvc, "version"], tmp) for _ in range(args.repeat))[args.repeat // 2]
        results["dvc version (start-up cost only)"] = baseline
        print(f"{args.n} files x {args.bytes} B, persist={args.persist}, {os.cpu_count()} CPUs")
        for name, secs in results.items():
            print(f"  {name:40s} {secs:6.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
