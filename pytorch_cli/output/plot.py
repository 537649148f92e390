"""Pictures of runs (optional extra `plot`: matplotlib): loss and accuracy curves from
metrics.jsonl, several runs on one figure; a confusion matrix and the worst mistakes from
`ptrain eval`; the LR range test; a model's feature maps for one image."""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from pathlib import Path

from pytorch_cli.platform.errors import PtrainError, UsageError, first_line
from pytorch_cli.platform.events import epochs_at
from pytorch_cli.platform.files import atomic_write, special


def require_matplotlib(what: str) -> None:
    """One line naming the extra, before any work is done."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(f"{what} needs matplotlib: pip install 'pytorch-cli[plot]'")


def named(out: Path | None) -> Path | None:
    """matplotlib's own rule for a name without a suffix: savefig("curves") writes curves.png.
    ptrain writes the file itself (atomically), so it adds the suffix, and says the real name.
    A name that exists (/dev/null, a pipe, a folder) is left to check_output."""
    if out is None or out.suffix or not out.name or os.path.lexists(out):
        return out
    return out.with_name(out.name + ".png")


def _figure(*shape: int, size: tuple[float, float]):
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed (SSH, SLURM)
    import matplotlib.pyplot as plt
    return plt.subplots(*shape, figsize=size, squeeze=False)


def check_output(out: Path) -> str:
    """The image format of `out` (its suffix; none: png), checked before any drawing: a folder,
    a file where a folder should be, or a suffix matplotlib cannot write is one line naming it."""
    from matplotlib.backend_bases import FigureCanvasBase
    if out.is_dir():
        raise UsageError(f"{out} is a folder; name an image file (.png, .svg, .pdf)")
    if what := special(out):  # /dev/full, a FIFO: the rename would put a file in its place
        raise UsageError(f"refusing to write {out}: it is {what}, not a file; name an image "
                         "file (.png, .svg, .pdf)")
    fmt = out.suffix.lstrip(".").lower() or "png"
    if fmt not in FigureCanvasBase.get_supported_filetypes():
        raise UsageError(f"{out}: matplotlib cannot write .{fmt} images; "
                         "name a .png, .svg or .pdf file")
    above = next((p for p in out.parents if p.exists()), Path("."))
    if not above.is_dir():
        raise UsageError(f"cannot write {out}: {above} is a file, not a folder")
    try:  # said now, not after the work: a read-only mount, and where root's os.access says
        with tempfile.TemporaryFile(dir=above):  # yes but no file can be made (/sys, /proc)
            pass
    except OSError:
        raise UsageError(f"cannot write {out}: {above} is not writable") from None
    return fmt


def _save(fig, out: Path) -> None:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format=check_output(out), dpi=120, bbox_inches="tight")
    plt.close(fig)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # as export does
        atomic_write(out, lambda f: f.write(buf.getvalue()))
    except OSError as e:  # the temporary file's name would mean nothing to the user
        raise PtrainError(f"cannot write {out}: {e.strerror or e}; nothing was written") from None


def curves(runs: dict[str, list[dict]], out: Path) -> None:
    """runs: label -> metrics records. Left: training loss (thin, every log record) and test
    loss (markers, per epoch); right: test and validation accuracy per epoch."""
    check_output(out)  # before the drawing
    fig, axes = _figure(1, 2, size=(12, 4.5))
    loss_ax, acc_ax = axes[0]
    for i, (label, records) in enumerate(runs.items()):
        color = f"C{i % 10}"
        # (records are records.valid: a field present has its type; one absent, the point goes)
        train = [r for r in records if r.get("kind") == "train" and r.get("train_loss") is not None
                 and all(k in r for k in ("epoch", "batch", "batches"))]
        epochs = [r for r in records if r.get("kind") == "epoch" and "epoch" in r]
        style = {}
        if not train:  # fewer batches an epoch than --log-interval (a small folder): no train
            # record, and no train curve (a hostile trial); each epoch's mean loss instead
            train, style = [r for r in epochs if r.get("train_loss") is not None], {"marker": "."}
        if train:
            loss_ax.plot([epochs_at(r) for r in train], [r["train_loss"] for r in train],
                         color=color, alpha=0.45, linewidth=1, label=f"{label} train", **style)
        tested = [r for r in epochs if r.get("test_loss") is not None]
        if tested:
            loss_ax.plot([epochs_at(r) for r in tested], [r["test_loss"] for r in tested], "o-",
                         color=color, label=f"{label} test")
        scored = [r for r in epochs if r.get("test_acc") is not None]  # (a NaN loss: null)
        if scored:
            acc_ax.plot([epochs_at(r) for r in scored], [100 * r["test_acc"] for r in scored],
                        "o-", color=color, label=f"{label} test")
        valed = [r for r in epochs if r.get("val_acc") is not None]
        if valed:
            acc_ax.plot([epochs_at(r) for r in valed], [100 * r["val_acc"] for r in valed], "s--",
                        color=color, label=f"{label} val")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss", yscale="log")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    from matplotlib.ticker import MaxNLocator
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 1.25
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    _save(fig, out)


def confusion(result: dict, out: Path) -> None:
    """Rows: true class, columns: predicted; colour is the row's share (so rare classes show),
    the number is the count."""
    check_output(out)
    classes, matrix = result["classes"], result["confusion"]
    n = len(classes)
    side = min(max(5.0, 0.55 * n + 2), 30.0)
    fig, axes = _figure(1, 1, size=(side, side * 0.9))
    ax = axes[0][0]
    shares = [[v / max(sum(row), 1) for v in row] for row in matrix]
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if n <= 20:  # beyond that the labels and numbers would overlap
        ax.set_xticks(range(n), classes, rotation=45, ha="right")
        ax.set_yticks(range(n), classes)
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color="white" if shares[i][j] > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true",
           title=f"{result['checkpoint']} on {result['dataset']} {result['split']}: "
                 f"{100 * result['acc']:.2f}%")
    _save(fig, out)


def _short(text: str, most: int = 16) -> str:
    return text if len(text) <= most else text[:most - 1] + "\u2026"


def _overlay(ax, heat, height: int, width: int) -> None:
    """A Grad-CAM map (in [0, 1], at the model's size) over an image of height x width."""
    ax.imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=1, interpolation="bilinear",
              extent=(-0.5, width - 0.5, height - 0.5, -0.5))


def top_losses(worst: list, of: int, title: str, out: Path, heat=None) -> None:
    """`ptrain eval --plot-errors`: the worst misclassified images (misclassified.Wrong), a
    4-wide grid in order, each titled with its name, true -> predicted class, the predicted
    class's probability and the loss (fastai's plot_top_losses); `heat` (N, H, W): Grad-CAM
    maps of their predicted classes, drawn over them (--heatmap)."""
    check_output(out)
    cols = min(4, max(1, len(worst)))
    rows = max(1, -(-len(worst) // cols))
    fig, axes = _figure(rows, cols, size=(2.6 * cols, 2.9 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, w) in enumerate(zip(axes.flat, worst)):
        pixels = w.pixels.permute(1, 2, 0).cpu().numpy()  # uint8 (H, W, C)
        gray = pixels.shape[2] == 1
        ax.imshow(pixels[..., 0] if gray else pixels, cmap="gray" if gray else None,
                  vmin=0, vmax=255, interpolation="nearest")  # small images: pixels, not a blur
        if heat is not None:
            _overlay(ax, heat[i], *pixels.shape[:2])
        # (a file name that is no UTF-8 holds surrogates, which matplotlib's text refuses)
        name = Path(w.image).name.encode(errors="surrogateescape").decode(errors="replace")
        ax.set_title(f"{_short(name, 24)}\n"
                     f"{_short(w.true)} \u2192 {_short(w.predicted)}\n"
                     f"p {w.prob:.2f}, loss {w.loss:.2f}", fontsize=7)
    what = f"the {len(worst)} worst of {of:,} misclassified" if worst else "no misclassified image"
    what += ", Grad-CAM of the predicted class" if heat is not None else ""
    fig.suptitle(f"{title}: {what} (true \u2192 predicted)", fontsize=9)
    # the grid packed under the title (matplotlib's default margins leave a band there)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()), h_pad=1.5)
    _save(fig, out)


def lr_curve(result: dict, out: Path) -> None:
    """`ptrain lr-find --plot`: the loss and its smoothed curve against the LR (log scale), the
    suggested LR marked."""
    fig, axes = _figure(1, 1, size=(7, 4.5))
    ax = axes[0][0]
    ax.plot(result["lr"], result["loss"], alpha=0.3, label="loss")
    ax.plot(result["lr"], result["smoothed"], label="smoothed")
    if result["suggested"] is not None:
        ax.axvline(result["suggested"], color="tab:red", linestyle="--",
                   label=f"suggested {result['suggested']:.3g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
           title=f"LR range test: {result['model']} on {result['dataset']}")
    ax.legend()
    _save(fig, out)


def feature_maps(image, stages: list, out: Path, per_stage: int = 8, cam=None) -> None:
    """`ptrain activations`: the input image (and `cam`: (Grad-CAM map, its title) over it,
    beside it), then a row per stage of its `per_stage` most active channels (highest mean),
    each on its own colour scale."""
    fig, axes = _figure(len(stages) + 1, per_stage, size=(1.4 * per_stage, 1.5 * len(stages) + 1.5))
    for ax in axes.flat:
        ax.axis("off")
    pixels = image.permute(1, 2, 0).numpy()  # uint8 (H, W, C)
    axes[0][0].imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels,
                      cmap="gray" if pixels.shape[2] == 1 else None)
    axes[0][0].set_title("input", fontsize=8, loc="left")
    if cam is not None and per_stage > 1:
        axes[0][1].imshow(pixels[..., 0] if pixels.shape[2] == 1 else pixels,
                          cmap="gray" if pixels.shape[2] == 1 else None)
        _overlay(axes[0][1], cam[0], *pixels.shape[:2])
        axes[0][1].set_title(cam[1], fontsize=8, loc="left")
    for row, stage in enumerate(stages, start=1):
        c, h, w = stage.maps.shape
        for k, channel in enumerate(stage.maps.mean((1, 2)).argsort(descending=True)[:per_stage]):
            axes[row][k].imshow(stage.maps[channel].numpy(), cmap="viridis")
        axes[row][0].set_title(f"{stage.node}: {c}x{h}x{w}", fontsize=8, loc="left")
    _save(fig, out)


def sweep_plots(study, folder: Path, metric: str) -> list[str]:
    """`ptrain sweep SWEEP_DIR --plot`: Optuna's own optimisation history and parameter
    importances (PED-ANOVA, its default: no scikit-learn) as history.png and importances.png in
    the sweep's folder. Returns a line for each: the file drawn, or why it was not."""
    import matplotlib
    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as views
    target = "accuracy (val, else test)" if metric == "acc" else "loss (val, else test)"
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        raise UsageError(f"{folder}: no completed trial yet, nothing to plot")
    lines = []
    for name, draw in (("history.png", views.plot_optimization_history),
                       ("importances.png", views.plot_param_importances)):
        try:
            ax = draw(study, target_name=target)
        except (ValueError, RuntimeError) as e:  # importances: too few trials, nothing varied
            lines.append(f"{name} not drawn: {first_line(e)}")
            continue
        ax.figure.set_size_inches(8, 4.5)
        _save(ax.figure, folder / name)
        lines.append(f"drawn: {folder / name}")
    return lines
