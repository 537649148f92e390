"""What every section of the GPU check's summary shares (benchmarks/gpu_report.py writes them):
appending to summary.md and results.jsonl, the status words, a run's metrics.jsonl records, number
formats; and the sections of ptrain's own steps: the CUDA-only tests, training runs as table rows,
the resume on another device. Torch-free."""

from __future__ import annotations

import json
import re
from pathlib import Path


class Out:
    def __init__(self, folder: str):
        self.summary = Path(folder, "summary.md")
        self.results = Path(folder, "results.jsonl")

    def md(self, *lines: str) -> None:
        with open(self.summary, "a") as f:
            f.write("".join(line + "\n" for line in lines))

    def json(self, record: dict) -> None:
        with open(self.results, "a") as f:
            f.write(json.dumps(record) + "\n")


def status(a) -> str:
    """One word or phrase a reader (and check_gpu_out.py) can scan for."""
    if a.rc == 0:
        return "ok"
    if a.rc in (124, 137):  # `timeout` expired (137: it had to SIGKILL after the grace period)
        return f"TIMED OUT after {a.timeout:.0f} s"
    return f"FAILED (exit {a.rc})"


def status_line(st: str, a, what: str = "") -> str:
    return f"status: {st} ({a.seconds:.0f} s of {a.timeout:.0f} s)" + (f"; {what}" if what else "")


def step_fields(a) -> dict:
    return {"rc": a.rc, "seconds": round(a.seconds, 1), "timeout": a.timeout, "status": status(a)}


def read_log(path: str) -> str:
    return Path(path).read_text(errors="replace") if Path(path).is_file() else ""


def records(run_dir: str, kind: str | None = None) -> list[dict]:
    path = Path(run_dir, "metrics.jsonl")
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
        if kind is None or r.get("kind") == kind:
            out.append(r)
    return out


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def num(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def cmd_tests(a, out: Out) -> None:
    lines = [ln for ln in read_log(a.log).splitlines() if ln.strip()]
    tally = next((ln.strip("= ") for ln in reversed(lines)
                  if re.search(r"\b(passed|failed|error|skipped|deselected|no tests ran)\b", ln)),
                 "(no pytest summary line)")
    failed = [ln for ln in lines if ln.startswith(("FAILED ", "ERROR "))]
    st = status(a)
    if a.rc in (124, 137):  # cut short, no summary line: count the -v lines of the tests that ended
        # "tests/x.py::t PASSED [ 20%]", or with xdist "[gw0] [ 20%] PASSED tests/x.py::t"
        outcome = re.compile(r"\b(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
        ended = [(ln, outcome.search(ln)) for ln in lines if "::" in ln]
        words = [m.group(1) for _, m in ended if m]
        tally = (", ".join(f"{words.count(w)} {w.lower()}" for w in sorted(set(words)))
                 or "no test had ended") + " before the timeout"
        failed = [ln for ln, m in ended if m and m.group(1) in ("FAILED", "ERROR")]
    if a.rc == 5:
        st = "FAILED (exit 5: no cuda-marked tests collected)"
    out.md(status_line(st, a), "", f"`{a.cmd}`: {tally}")
    if failed:
        out.md("", *[f"- {ln[:300]}" for ln in failed[:20]])
    out.md("")
    out.json({"step": "tests", **step_fields(a), "status": st, "tally": tally, "failed": failed})


TRAIN_HEAD = ("| run | status | seconds | compile s | train s | last train loss | test acc |",
              "|---|---|---|---|---|---|---|")


def cmd_train_row(a, out: Out) -> None:
    """A `ptrain train` run as a row: its end record (metrics.jsonl) and its exit."""
    end = (records(a.run_dir, "end") or [{}])[-1]
    st = status(a)
    loss = end.get("train_loss")
    if st == "ok" and loss is not None and loss != loss:  # NaN
        st = "FAILED (loss is NaN)"
    out.md(f"| {a.label} | {st} | {a.seconds:.0f} | {num(end.get('compile_s'))} | "
           f"{num(end.get('train_s_total'), 2)} | {num(loss, 4)} | {pct(end.get('test_acc'))} |")
    out.json({"step": a.step, "run": a.label, **step_fields(a), "status": st,
              "steps": end.get("step"),
              **{k: end.get(k) for k in ("compile_s", "train_s_total", "train_loss", "test_acc",
                                         "device")}})


def cmd_resume(a, out: Out) -> None:
    """The resume legs, read from the run's own records: each start record names its device and,
    for a resume, where it continued."""
    starts, ends = records(a.run_dir, "start"), records(a.run_dir, "end")
    stops = records(a.run_dir, "stop")
    legs = [leg.split("=") for leg in a.legs.split(",") if leg]
    lines = []
    for i, (device, rc) in enumerate(legs):
        start = starts[i] if i < len(starts) else {}
        at = start.get("resume_at")
        where = f"resumed at epoch {at[0]} after batch {at[1]}" if at else "new run"
        lines.append(f"- leg {i + 1}, `--device {device}` (ran on {start.get('device', '?')}): "
                     f"exit {rc}; {where}")
    if stops:
        s = stops[0]
        lines.append(f"- leg 1 stopped by {s.get('reason')} at step {s.get('step')} (epoch "
                     f"{s.get('epoch')}, batch {s.get('batch')}): a mid-epoch last.pt")
    elif a.finished_first:
        lines.append("- leg 1 finished before the signal: the resume extended the run instead "
                     "(--epochs), so it continued from an epoch's end, not mid-epoch")
    end = ends[-1] if ends else {}
    ok = (len(legs) >= 2 and legs[0][1] in ("0", "143") and all(rc == "0" for _, rc in legs[1:])
          and len(starts) >= len(legs))
    st = status(a) if a.rc else ("ok" if ok else "FAILED (see legs)")
    out.md(status_line(st, a, a.what), "", *lines,
           f"- final: step {end.get('step', '-')}, test acc {pct(end.get('test_acc'))} on "
           f"{end.get('device', '-')}", "")
    out.json({"step": "resume", **step_fields(a), "status": st, "legs": legs,
              "starts": [{k: s.get(k) for k in ("device", "resume_at")} for s in starts],
              "final_acc": end.get("test_acc")})


def cmd_own_images(a, out: Out) -> None:
    """benchmarks/own_images.py's JSON: a row per command, then whether predict and eval agree."""
    got = json.loads(Path(a.json).read_text()) if Path(a.json).is_file() else {}
    st = status(a)
    if st == "ok" and not got.get("agree"):
        st = "FAILED (predict and eval disagree)"
    n = got.get("images", {})
    train, tuned = got.get("train", {}), got.get("fine_tune", {})
    if st == "ok" and not tuned:
        st = "FAILED (the fine-tuning run)"
    out.md(status_line(st, a, a.what), "",
           f"- {n.get('train', '-')} training and {n.get('test', '-')} test PNGs written in "
           f"{num(n.get('write_s'))} s", "", "| command | status | seconds |", "|---|---|---|",
           *[f"| `{r['command']}` | {'ok' if r['rc'] == 0 else 'FAILED (exit %d)' % r['rc']} | "
             f"{r['seconds']:.1f} |" for r in got.get("rows", [])], "",
           f"- train: test acc {pct(train.get('test_acc'))}, {num(train.get('images_per_s'), 0)} "
           f"img/s on {train.get('device', '-')}; eval {pct(got.get('eval_acc'))} "
           f"({got.get('precision', '-')}), predict {pct(got.get('predict_acc'))} of "
           f"{got.get('predicted', '-')} images; the same images wrong: {got.get('agree', '-')}",
           f"- fine-tune (torchvision:resnet18 from a weights file of fresh weights, --freeze "
           f"backbone --unfreeze-at 1, 64 px, 2 epochs): test acc {pct(tuned.get('test_acc'))}, "
           f"{num(tuned.get('images_per_s'), 0)} img/s, {num(tuned.get('train_s_total'))} s of "
           "training",
           *[f"- {r['command']}: {r['error'][-300:]}" for r in got.get("rows", []) if "error" in r],
           "")
    out.json({"step": "own-images", **step_fields(a), "status": st,
              **{k: v for k, v in got.items() if k != "rows"}, "rows": got.get("rows")})
