"""Check what benchmarks/gpu_check.sh left in OUT against what the lent GPU machine sends back:
at most 8 files, none in a folder (the check writes none), names of letters, digits, '.', '_' and
'-', 16 MiB a file and 64 MiB in all; summary.md with every section, each saying how its step
went; results.jsonl one JSON object a line. Exit 1, listing the problems, if any.

    python benchmarks/check_gpu_out.py OUT
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

MAX_FILES, MAX_FILE, MAX_TOTAL = 8, 16 * 2**20, 64 * 2**20
NAME = re.compile(r"[A-Za-z0-9._-]+")
# summary.md's headings, in order (gpu_check.sh writes them, a step skipped or not)
SECTIONS = ["# ptrain GPU check", "## 1. CUDA-only tests", "## 2. Mixed precision",
            "## 3. Resume on another device", "## 4. Throughput", "## 5. MNIST time to accuracy",
            "## 6. CIFAR-10", "## 7. Own images", "## 8. torchrun", "## 9. airbench",
            "## Done"]
OUTCOME = re.compile(r"\b(ok|FAILED|TIMED OUT|skipped|ran; target)\b")


def problems(out: Path) -> list[str]:
    if not out.is_dir():
        return [f"{out} is not a folder"]
    found, total = [], 0
    entries = sorted(out.iterdir())
    for p in entries:
        if p.is_symlink() or not p.is_file():
            found.append(f"{p.name}: not a plain file (folders and links do not come back)")
            continue
        size = p.stat().st_size
        total += size
        if not NAME.fullmatch(p.name):
            found.append(f"{p.name!r}: a name of other characters than letters, digits, . _ -")
        if size > MAX_FILE:
            found.append(f"{p.name}: {size / 2**20:.1f} MiB, over 16 MiB")
    if len(entries) > MAX_FILES:
        found.append(f"{len(entries)} entries, more than {MAX_FILES}")
    if total > MAX_TOTAL:
        found.append(f"{total / 2**20:.1f} MiB in all, over 64 MiB")
    summary = out / "summary.md"
    if not summary.is_file():
        return [*found, "no summary.md"]
    text = summary.read_text(errors="replace")
    lines = text.splitlines()
    at = []
    for heading in SECTIONS:
        where = next((i for i, ln in enumerate(lines) if ln.startswith(heading)), None)
        if where is None:
            found.append(f"summary.md: no section {heading!r}")
        at.append(where)
    for k, heading in enumerate(SECTIONS[1:-1], start=1):
        if at[k] is None:
            continue
        end = next((i for i in at[k + 1:] if i is not None and i > at[k]), len(lines))
        if not OUTCOME.search("\n".join(lines[at[k] + 1:end])):
            found.append(f"summary.md: section {heading!r} says nothing of how its step went")
    if [i for i in at if i is not None] != sorted(i for i in at if i is not None):
        found.append("summary.md: sections out of order")
    results = out / "results.jsonl"
    if results.is_file():
        for n, line in enumerate(results.read_text().splitlines(), start=1):
            try:
                json.loads(line)
            except json.JSONDecodeError:
                found.append(f"results.jsonl line {n}: not JSON")
    return found


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    out = Path(sys.argv[1])
    found = problems(out)
    for p in found:
        print(f"check_gpu_out: {p}")
    if found:
        sys.exit(1)
    names = sorted(p.name for p in out.iterdir())
    print(f"check_gpu_out: {out}: {len(names)} files ({', '.join(names)}), every section there")


if __name__ == "__main__":
    main()
