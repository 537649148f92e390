"""Where a new run's starting weights come from: --weights (a torchvision:/timm: model's
pretrained weights: DEFAULT, one of its weight names, or a file) or --init-from (a run's
directory or model.pth). Each gives a state dict and, where known, the mean and std the weights
were trained with: the run normalises its images that way, so that they see what they learned on.
adapt.load_into then loads what fits."""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from pytorch_cli.models import hub
from pytorch_cli.platform.errors import PtrainError, UsageError
from pytorch_cli.store import checkpoint
from pytorch_cli.store.checkpoint import checkpoint_in
from pytorch_cli.store.rundir import MODEL

# torchvision's googlenet and inception_v3 weights were trained on inputs their builder rescales
# from ImageNet's normalisation to (x - 0.5) / 0.5 (transform_input); ptrain builds them without
# that step (it indexes three channels), so it normalises with 0.5 directly: the same numbers.
HALF = {"googlenet", "inception_v3"}


@dataclass
class Source:
    state: dict[str, torch.Tensor]
    label: str  # what the start line names: the file, or the weights and their file
    mean: tuple[float, ...] | None  # None: not known, the dataset's own stay
    std: tuple[float, ...] | None
    classes: list[str] | None = None  # a ptrain run's: its head's rows go to the run's by name
    model: str = ""  # a ptrain run's --model


def resolve(cfg) -> Source | None:
    """The starting weights cfg asks for; None: the model's own fresh initialisation."""
    if cfg.init_from:
        path = Path(cfg.init_from).expanduser()
        if not path.exists():
            raise UsageError(f"--init-from {cfg.init_from}: no such run directory or file")
        return from_file(path)
    if not cfg.weights:
        return None
    kind, arch = cfg.model.split(":", 1)
    return _timm(arch, cfg.weights) if kind == "timm" else _torchvision(arch, cfg.weights)


def from_file(path: Path, mean=None, std=None) -> Source:
    """A ptrain model.pth, last.pt or best.pt (its mean and std come along), a run directory
    (its model.pth), or a bare state dict (with the mean and std given, if any)."""
    path = checkpoint_in(path, MODEL)
    saved = checkpoint.load(path, "give another weights file: a state dict, or a run's "
                                  "model.pth, last.pt or best.pt")
    state = checkpoint.weights(saved) or _unwrapped(saved, path)
    classes, model = None, ""
    if "meta" in saved:
        mean, std = saved["meta"]["mean"], saved["meta"]["std"]
        classes = [str(c) for c in saved["meta"].get("classes") or []] or None
        model = str(saved["meta"].get("model", ""))
    return Source(checkpoint.clean_state_dict(state), str(path),
                  tuple(mean) if mean else None, tuple(std) if std else None, classes, model)


# where training scripts keep the state dict inside a checkpoint (timm's load_checkpoint reads
# the first two; torchvision's references write "model", Lightning "state_dict", others these)
WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "module")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".pkl")  # a file, not a tag


def _unwrapped(saved: dict, path: Path) -> dict:
    """The state dict a training script's checkpoint keeps under one of WRAPPERS' keys."""
    for key in WRAPPERS:
        inner = saved.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor)
                                                     for v in inner.values()):
            checkpoint.check_weights(inner, path)
            return inner
    keys = ", ".join(map(str, list(saved)[:5])) or "none"
    raise PtrainError(f"{path}: holds no weights: a ptrain checkpoint, a state dict of tensors, "
                      f"or one under one of the keys {', '.join(WRAPPERS)} (its keys: {keys})")


def _torchvision(arch: str, given: str) -> Source:
    import torchvision
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (KeyError, ValueError):
        raise UsageError(f"--weights: torchvision:{arch} has no pretrained weights") from None
    names = [w.name for w in enum]
    member = given.rsplit(".", 1)[-1]
    if given in ("DEFAULT", f"{enum.__name__}.DEFAULT"):  # (an alias of one of the names)
        weights = enum.DEFAULT
    elif member in names and given in (member, f"{enum.__name__}.{member}"):
        weights = enum[member]
    else:
        if not Path(given).expanduser().exists():
            raise UsageError(f"--weights {given}: no such file, nor a weight name of "
                             f"torchvision:{arch} (DEFAULT, {', '.join(names)})")
        # a bare state dict says nothing of its normalisation: the model's own weights' is likeliest
        return from_file(Path(given).expanduser(), *_normalisation(arch, enum.DEFAULT))
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if not file.is_file():
        _download(weights.url, file, f"torchvision:{arch} {enum.__name__}.{weights.name}")
    source = from_file(file, *_normalisation(arch, weights))
    source.label = f"{enum.__name__}.{weights.name} ({file})"
    return source


def _normalisation(arch: str, weights) -> tuple[tuple, tuple]:
    if arch in HALF:
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    preset = weights.transforms()
    return tuple(preset.mean), tuple(preset.std)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether url's host takes a connection. Offline, huggingface_hub retries for ~45 s and a
    firewalled urlopen waits minutes; through a proxy the libraries are left to try."""
    parts = urlparse(url)
    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if any(os.environ.get(v) for v in proxies):
        return True
    try:
        port = parts.port or (80 if parts.scheme == "http" else 443)
        socket.create_connection((parts.hostname, port), timeout).close()
        return True
    except OSError:  # no name, no route, refused, timed out
        return False


@contextlib.contextmanager
def _hub_cache_only(offline: bool):
    """huggingface_hub's offline mode (what HF_HUB_OFFLINE=1 sets), for one load: its cached
    files load at once, a missing one fails at once."""
    from huggingface_hub import constants
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _download(url: str, file: Path, what: str) -> None:
    """Fetch into torch's cache, as torchvision would; offline, one line says what to put where."""
    try:
        if not _reachable(url):
            raise OSError(f"{urlparse(url).hostname} cannot be reached")
        file.parent.mkdir(parents=True, exist_ok=True)
        prefix = re.search(r"-([a-f0-9]+)\.", file.name)  # torch.hub's check of the file's sha256
        torch.hub.download_url_to_file(url, str(file), prefix and prefix.group(1),
                                       progress=False)
    except Exception as e:  # no network, a proxy, a full disk, a bad hash: all say the same
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise PtrainError(f"--weights: {what} is not on this machine and could not be downloaded "
                          f"({reason}); put {file.name} (from {url}) in {file.parent} "
                          "($TORCH_HOME/hub/checkpoints), or pass --weights FILE") from None


def _timm(arch: str, given: str) -> Source:
    timm = hub.import_timm()
    file = Path(given).expanduser()
    if given != "DEFAULT" and file.exists():
        cfg = timm.models.get_pretrained_cfg(arch)  # its default weights' (None: not known)
        return from_file(file, cfg and cfg.mean, cfg and cfg.std)
    if "/" in given or os.sep in given or file.suffix.lower() in WEIGHT_SUFFIXES:  # no tag
        raise UsageError(f"--weights {given}: no such file (timm's weights by name: DEFAULT, "
                         f"or a tag of timm:{arch} such as in1k)")
    name = arch if given == "DEFAULT" else f"{arch.split('.')[0]}.{given}"  # a tag: a1_in1k...
    from huggingface_hub import constants
    online = _reachable(constants.ENDPOINT)
    try:
        with _hub_cache_only(not online):
            model = timm.create_model(name, pretrained=True)
    except Exception as e:  # offline: huggingface_hub's own error, or timm's for a bad tag
        if not online or constants.HF_HUB_OFFLINE:
            raise PtrainError(f"--weights {given}: {constants.ENDPOINT} cannot be reached and "
                              f"timm's {name} weights are not in huggingface_hub's cache "
                              "($HF_HOME/hub); pass --weights FILE") from None
        reason = " ".join(str(e).split()) or type(e).__name__
        if len(reason) > 160:  # its first sentence, or whole words
            cut = reason[:160]
            reason = cut.rsplit(". ", 1)[0] if ". " in cut else cut.rsplit(" ", 1)[0] + " ..."
        raise PtrainError(f"--weights {given}: timm could not load {name}'s pretrained weights "
                          f"({reason}); with no network, pass --weights FILE (or fill "
                          "$HF_HOME/hub, as huggingface_hub does)") from None
    cfg = model.pretrained_cfg
    return Source(checkpoint.clean_state_dict(model.state_dict()), f"timm {name}",
                  cfg.get("mean"), cfg.get("std"))


def for_channels(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """A normalisation for the run's channels: gray takes the average of RGB's (its first conv
    is the sum of the RGB kernels), colour repeats a gray one."""
    if len(values) == channels:
        return tuple(values)
    if channels == 1:
        return (sum(values) / len(values),)
    return tuple(values) * channels if len(values) == 1 else tuple(values[:channels])
