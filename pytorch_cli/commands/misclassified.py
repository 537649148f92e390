"""`ptrain eval --errors FILE.csv` and `--plot-errors FILE.png`: the images the model got wrong,
worst first: by loss, so the most confident mistakes lead, where mislabelled images turn up
(fastai's top_losses and plot_top_losses). A folder's images are named by their files, a
built-in dataset's by split and row (`test[123]`)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import torch

from pytorch_cli.data.datasets import Data, Split
from pytorch_cli.platform.errors import UsageError, plural
from pytorch_cli.store import outputs

COLUMNS = ("image", "true", "predicted", "prob", "true_prob", "loss")
DRAWN = 16  # --plot-errors: a 4x4 grid, each image still large enough to see what it shows


@dataclass
class Wanted:
    """The files `ptrain eval` is asked to write besides its result: its mistakes (neither:
    nothing per image is kept) and the confusion matrix's picture (cli.py draws it)."""
    csv: Path | None = None
    plot: Path | None = None
    confusion: Path | None = None
    heatmap: bool = False  # the plot's images overlaid with Grad-CAM of their predicted class

    def __bool__(self) -> bool:
        return bool(self.csv or self.plot)

    def check_names(self, source: Path) -> None:
        """Before any work: --errors names a new .csv file; no file goes onto the checkpoint
        (`source`, or a run directory's model.pth), a run's own files or another output."""
        if self.csv:
            outputs.check_new_file(self.csv, "--errors", ".csv", "a .csv file, e.g. errors.csv",
                                   source)
        read = outputs.checkpoint_read(source)
        for flag, out in (("--plot-errors", self.plot), ("--plot-confusion", self.confusion)):
            if out:
                outputs.refuse_overwrite([out], read, flag)
        if self.plot and self.confusion and outputs.same_file(self.plot, self.confusion):
            raise UsageError(f"--plot-errors and --plot-confusion both name {self.plot}: one "
                             "would replace the other; name two files")

    def check(self, config: dict, data_dir: str, labels: str | None) -> None:
        """Before reading the data: no output onto a --labels CSV being read (the run's own, or
        one given), nor a picture inside an image folder being read, where the next run would
        take it for one of its images (or it would replace one)."""
        read = {Path(p): "a --labels file being read" for p in (labels, config.get("labels"))
                if p}
        for flag, out in (("--errors", self.csv), ("--plot-errors", self.plot),
                          ("--plot-confusion", self.confusion)):
            if out:
                outputs.refuse_overwrite([out], read, flag)
        pictures = [(flag, out) for flag, out in (("--plot-errors", self.plot),
                                                  ("--plot-confusion", self.confusion)) if out]
        outputs.refuse_in_image_folders(pictures, outputs.image_folders(config, data_dir))


@dataclass
class Wrong:
    image: str  # its file (a folder's) or split[row]
    true: str
    predicted: str
    prob: float  # of the predicted class
    true_prob: float
    loss: float
    pixels: torch.Tensor  # (C, H, W) uint8, as the dataset holds it: a view, not a copy


def rows(per_image: list[torch.Tensor], split: Split, name: str, data: Data,
         classes: list[str]) -> list[Wrong]:
    """The misclassified images of one split, from evaluate()'s per_image of it."""
    if not per_image:
        return []
    table, files = torch.cat(per_image), data.names.get(name)
    truth = split.labels.cpu()
    wrong = (table[:, 1].long() != truth).nonzero().flatten()
    out = []  # (whole lists, not an element at a time: 9,030 rows of 10,000 in 0.07 s)
    for i, true, (loss, predicted, prob, true_prob) in zip(
            wrong.tolist(), truth[wrong].tolist(), table[wrong].tolist()):
        image = str(Path(data.source) / files[i]) if files else f"{name}[{i}]"
        out.append(Wrong(image, classes[true], classes[int(predicted)], prob, true_prob, loss,
                         split.images[i]))
    return out


def save(wanted: Wanted, found: list[Wrong], title: str, heat=None) -> dict:
    """Write what was asked for, worst first; returns what the result JSON says of it. `heat`:
    the worst images -> their Grad-CAM maps (N, H, W), with --heatmap."""
    found = sorted(found, key=lambda w: -w.loss)
    said = {}
    if wanted.csv:
        write(wanted.csv, found)
        said["errors"] = {"file": str(wanted.csv), "images": len(found)}
    if wanted.plot:
        from pytorch_cli.output import plot
        worst = found[:DRAWN]
        plot.top_losses(worst, len(found), title, wanted.plot,
                        heat(worst) if wanted.heatmap and worst else None)
        said["plot_errors"] = {"file": str(wanted.plot), "images": min(len(found), DRAWN),
                               "of": len(found)}
    return said


def written(result: dict) -> list[str]:
    """A line for each file the evaluation wrote besides its result."""
    lines = []
    if "errors" in result:
        lines.append(f"{plural(result['errors']['images'], 'misclassified image')}, worst first, "
                     f"in {result['errors']['file']}")
    if "plot_errors" in result:
        n, of, out = (result["plot_errors"][k] for k in ("images", "of", "file"))
        lines.append(f"the {n} worst of {of:,} misclassified images drawn in {out}" if n < of
                     else f"{plural(n, 'misclassified image')} drawn in {out}")
    if "plot_confusion" in result:
        lines.append(f"confusion matrix drawn in {result['plot_confusion']['file']}")
    return lines


def write(path: Path, found: list[Wrong]) -> None:
    """The rows as CSV, written atomically (its folder made where missing)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    for w in found:
        writer.writerow([w.image, w.true, w.predicted,
                         *(f"{v:.6f}" for v in (w.prob, w.true_prob, w.loss))])
    # a file name that is no UTF-8 (Python's surrogates) keeps its own bytes: open() takes them
    outputs.write_new_file(path, text.getvalue().encode(errors="surrogateescape"))
