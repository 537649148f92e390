"""What a person reads after a command that is not a training run: `ptrain eval`'s scores,
`ptrain summary`'s layer table, `ptrain lr-find`'s curve. Rich tables on a terminal, plain
aligned text otherwise. (Training's progress and records: report.py; the runs: runs_table.py.)"""

from __future__ import annotations

import unicodedata
from typing import TextIO

from rich.console import Console


def flops_text(flops: float) -> str:
    """1,234,567 -> '1.23 MFLOPs' (a multiply-add counts 2, as torch.utils.flop_counter has it)."""
    for unit, scale in (("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f} FLOPs"


def print_summary(r: dict, stream: TextIO) -> None:
    """`ptrain summary`: the layer table, then totals, FLOPs and the activations' memory."""
    c, h, w = r["input"]
    rows = [(n["name"], n["kind"], "x".join(map(str, n["shape"])) if n["shape"] else "(unused)",
             f"{n['params']:,}", f"{n['trainable']:,}") for n in r["layers"]]
    head = ("layer", "kind", "output", "parameters", "trainable")
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(5)]
    lines = [f"{r['model']} for {c}x{h}x{w} images (channels x height x width)"]
    for row in [head, *rows]:
        lines.append("  " + "  ".join(cell.ljust(wd) if i < 3 else cell.rjust(wd)
                                      for i, (cell, wd) in enumerate(zip(row, widths))))
    mib = r["activation_bytes"] / 2**20
    lines += [f"total: {r['params']:,} parameters, {r['trainable']:,} trainable "
              f"({r['params'] * 4 / 2**20:.2f} MiB in float32)",
              f"forward: {flops_text(r['flops'])} per image (torch.utils.flop_counter; a "
              "multiply-add is 2 FLOPs)",
              f"layer outputs at batch {r['batch_size']}: {mib:.1f} MiB in float32, about what "
              "the forward keeps for the backward (what functional ops such as F.relu make in "
              "a forward is not counted)"]
    print("\n".join(lines), file=stream, flush=True)


def print_lr_find(r: dict, stream: TextIO, rows: int = 20) -> None:
    """`ptrain lr-find` without a plot: about `rows` points of the curve, then the suggestion."""
    every = max(1, len(r["lr"]) // rows)
    lines = [f"LR range test: {r['model']} on {r['dataset']}, {r['optimizer']}, batch "
             f"{r['batch_size']}, {len(r['lr'])} steps", f"  {'lr':>10}  {'loss':>8}  smoothed"]
    lines += [f"  {lr:>10.3g}  {loss:>8.4f}  {s:>8.4f}" for lr, loss, s in
              list(zip(r["lr"], r["loss"], r["smoothed"]))[::every]]
    if r["suggested"] is None:
        lines.append(r["unsuggested"])
    else:
        lines.append(f"suggested --lr {r['suggested']:.3g} (the steepest fall of the smoothed "
                     f"loss); its minimum was at {r['minimum']:.3g}")
    print("\n".join(lines), file=stream, flush=True)


def _scores(r: dict, c: str | None) -> tuple[str, str, str]:
    """Accuracy (recall), precision and F1 of class c, or their macro averages (c None)."""
    s = r["macro"] if c is None else r["per_class"][c]
    return tuple("-" if s[k] is None else f"{100 * s[k]:.2f}%"  # no image, never predicted
                 for k in ("recall", "precision", "f1"))


def _columns(text: str) -> int:
    """Terminal columns: East Asian wide characters (a class named 日本) take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _confused(r: dict) -> str:
    return "most confused (true -> predicted, images): " + ", ".join(
        f"{m['true']} -> {m['predicted']} {m['images']}" for m in r["most_confused"])


def print_eval(r: dict, stream: TextIO) -> None:
    """Evaluation results: rich tables on a terminal, plain aligned text otherwise."""
    folder = [r["source"]] if r["dataset"] == "folder" and "source" in r else []  # which one
    where = " ".join([r["dataset"], *folder, "(all images)" if r["split"] == "all" else r["split"]])
    head = (f"{r['checkpoint']} on {where}{' with TTA' if r['tta'] else ''}: "
            f"loss {r['loss']:.4f} acc {100 * r['acc']:.2f}% ({r['correct']}/{r['total']})"
            + (f" top-5 {100 * r['top5_acc']:.2f}%" if "top5_acc" in r else ""))
    classes, matrix = r["classes"], r["confusion"]
    if stream.isatty():
        from rich.table import Table
        console = Console(file=stream)
        console.print(head, highlight=False, markup=False)
        per = Table(title="per class (accuracy is recall)")
        for column in ("class", "accuracy", "precision", "F1", "images"):
            per.add_column(column, justify="left" if column == "class" else "right")
        for c, row in zip(classes, matrix):
            per.add_row(c, *_scores(r, c), str(sum(row)))
        per.add_row("macro average", *_scores(r, None), str(r["total"]))
        console.print(per)
        if r.get("most_confused"):
            console.print(_confused(r), highlight=False, markup=False)
        if len(classes) <= 20:
            conf = Table(title="confusion matrix (rows: true class, columns: predicted)")
            for column in ("", *map(str, range(len(classes)))):
                conf.add_column(column, justify="right" if column else "left")
            for i, row in enumerate(matrix):
                conf.add_row(f"{i} {classes[i]}", *map(str, row))
            console.print(conf)
        return
    width = max(_columns(c) for c in (*classes, "macro average"))
    lines = [head, f"  {'class':<{width}}  {'accuracy':>8}  {'precision':>9}  {'F1':>7}  images"]
    rows = [(c, _scores(r, c), sum(row)) for c, row in zip(classes, matrix)]
    lines += [f"  {c}{' ' * (width - _columns(c))}  {acc:>8}  {p:>9}  {f:>7}  {n:>6}"
              for c, (acc, p, f), n in [*rows, ("macro average", _scores(r, None), r["total"])]]
    lines += [_confused(r)] if r.get("most_confused") else []
    if len(classes) <= 20:
        lines.append("confusion matrix (rows: true class, columns: predicted):")
        cell = max(len(str(v)) for row in matrix for v in row) + 1
        lines += ["  " + "".join(f"{v:>{cell}}" for v in row) for row in matrix]
    print("\n".join(lines), file=stream, flush=True)
