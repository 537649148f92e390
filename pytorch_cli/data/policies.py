"""torchvision's automatic augmentation policies, batched on uint8 images on the device.

RandAugment(num_ops=2, magnitude=9, num_magnitude_bins=31), TrivialAugmentWide(31 bins) and
AutoAugment(CIFAR10), nearest interpolation, fill 0: each image gets its own ops, magnitudes and
signs, drawn on the host (draw) and applied with device ops only (apply). Per op round the images
are gathered into op order once, each op runs on its contiguous slice with per-image parameters,
and one gather puts them back; the grouping comes from the host draws, so the host never waits
for the device. Each image's result equals torchvision.transforms.v2.functional on that image
with that op and magnitude, bit for bit (tests/test_policies.py)."""

from __future__ import annotations

import functools
import math

import torch
from torch.nn import functional as nnf

KINDS = ("randaugment", "trivialaugment", "autoaugment")
OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
       "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
       "Invert")
ROUNDS = 2  # op rounds per image: RandAugment's num_ops, AutoAugment's sub-policy length
# Rows 3r, 3r+1, 3r+2: round r's op (index into OPS; 0, Identity, where AutoAugment's apply-draw
# failed or TrivialAugment has no second op), magnitude bin, sign (1: negate a signed magnitude)
ROWS = 3 * ROUNDS
SPACES = {"randaugment": OPS[:14], "trivialaugment": OPS[:14], "autoaugment": OPS[1:]}
BINS = {"randaugment": 31, "trivialaugment": 31, "autoaugment": 10}
_SIGNED = frozenset(OPS[1:10])
# Top of each magnitude range: (RandAugment, AutoAugment; TrivialAugment); None: side * 150/331
_TOP = {"ShearX": (0.3, 0.99), "ShearY": (0.3, 0.99), "TranslateX": (None, 32.0),
        "TranslateY": (None, 32.0), "Rotate": (30.0, 135.0), "Brightness": (0.9, 0.99),
        "Color": (0.9, 0.99), "Contrast": (0.9, 0.99), "Sharpness": (0.9, 0.99)}
# AutoAugmentPolicy.CIFAR10: (op, probability, magnitude bin) pairs
CIFAR10 = (
    (("Invert", 0.1, 0), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 0), ("Equalize", 0.9, 0)), (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)), (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 0), ("Equalize", 0.5, 0)), (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)), (("Equalize", 0.3, 0), ("AutoContrast", 0.4, 0)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)), (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 0)), (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 0), ("Equalize", 0.6, 0)), (("Color", 0.9, 9), ("Equalize", 0.6, 0)),
    (("AutoContrast", 0.8, 0), ("Solarize", 0.2, 8)), (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 0)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.8, 3)), (("Equalize", 0.8, 0), ("Invert", 0.1, 0)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 0)),
)


def draw(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    """(ROWS, n) int64 on the host: each image's ops, magnitude bins and signs, from `g` only."""
    rows = torch.zeros(ROWS, n, dtype=torch.int64)
    if kind == "autoaugment":
        pick = torch.randint(len(CIFAR10), (n,), generator=g)
        ops, probs, bins = _policy_columns()
        keep = torch.rand(ROUNDS, n, generator=g) <= probs[:, pick]  # torchvision: rand <= p
        rows[0::3] = torch.where(keep, ops[:, pick], 0)
        rows[1::3] = bins[:, pick]
    elif kind in KINDS:
        rounds = ROUNDS if kind == "randaugment" else 1
        space = torch.tensor([OPS.index(op) for op in SPACES[kind]])
        rows[0:3 * rounds:3] = space[torch.randint(len(space), (rounds, n), generator=g)]
        rows[1:3 * rounds:3] = (9 if kind == "randaugment"
                                else torch.randint(BINS[kind], (rounds, n), generator=g))
    else:
        raise ValueError(f"unknown augmentation policy {kind!r}; choose one of {KINDS}")
    rows[2::3] = (torch.rand(ROUNDS, n, generator=g) <= 0.5) & (rows[0::3] != 0)
    return rows


@functools.lru_cache(maxsize=1)
def _policy_columns() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CIFAR10 as (ROUNDS, 25) tables of op index, probability (float32, as torch.rand) and bin."""
    subs = [[sub[r] for sub in CIFAR10] for r in range(ROUNDS)]
    return (torch.tensor([[OPS.index(op) for op, _, _ in s] for s in subs]),
            torch.tensor([[p for _, p, _ in s] for s in subs], dtype=torch.float32),
            torch.tensor([[b for _, _, b in s] for s in subs]))


def magnitude(kind: str, op: str, bin: int, sign: int, h: int, w: int) -> float:
    """The signed magnitude torchvision passes to _apply_image_or_video_transform: its float32
    linspace value read as a python float (0.0 for ops without one)."""
    nb = BINS[kind]
    wide = kind == "trivialaugment"
    if op in _TOP:
        top = _TOP[op][wide]
        if top is None:
            top = 150.0 / 331.0 * (w if op == "TranslateX" else h)
        value = float(torch.linspace(0.0, top, nb)[bin])
        return -value if sign else value
    if op == "Posterize":
        return float((8 - (torch.arange(nb) / ((nb - 1) / (6 if wide else 4)))).round().int()[bin])
    if op == "Solarize":
        return float(torch.linspace(1.0, 0.0, nb)[bin])
    return 0.0


def _inverse_affine(center, angle, translate, shear) -> list[float]:
    """torchvision's _get_inverse_affine_matrix at scale 1, operation for operation (the float32
    theta, and with it the sampled pixels, then match bit for bit)."""
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    (cx, cy), (tx, ty) = center, translate
    cos_sy, tan_sx, rot_minus_sy = math.cos(sy), math.tan(sx), rot - sy
    cx_plus_tx, cy_plus_ty = cx + tx, cy + ty
    a = math.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot_minus_sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    m = [d / 1.0, -b / 1.0, 0.0, -c / 1.0, a / 1.0, 0.0]
    m[2] += cx - m[0] * cx_plus_tx - m[1] * cy_plus_ty
    m[5] += cy - m[3] * cx_plus_tx - m[4] * cy_plus_ty
    return m


def _params(op: str, mag: float, h: int, w: int) -> list[float]:
    """One image's op parameters, as torchvision derives them from the magnitude (in float64;
    the ops read them as float32, as torch reads a python float scalar)."""
    if op in ("ShearX", "ShearY"):  # sheared about the top-left corner (center=[0, 0])
        s = math.degrees(math.atan(mag))
        return _inverse_affine([-w * 0.5, -h * 0.5], 0.0, [0.0, 0.0],
                               [s, 0.0] if op == "ShearX" else [0.0, s])
    if op in ("TranslateX", "TranslateY"):
        t = float(int(mag))
        return _inverse_affine([0.0, 0.0], 0.0, [t, 0.0] if op == "TranslateX" else [0.0, t],
                               [0.0, 0.0])
    if op == "Rotate":
        angle = mag % 360
        m = _inverse_affine([0.0, 0.0], -angle, [0.0, 0.0], [0.0, 0.0])
        if angle % 180 == 0 or (h == w and angle % 90 == 0):
            m = [float(round(v)) for v in m]  # torchvision's exact clone/rot90 fast paths
        return m
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        ratio = 1.0 + mag
        return [ratio, 1.0 - ratio]  # the factor (_blend's ratio) and _blend's add_ alpha
    if op == "Posterize":
        bits = int(mag)
        return [float(((1 << bits) - 1) << (8 - bits))]  # the bit mask posterize_image ands
    if op == "Solarize":
        return [255 * mag]
    return []


@functools.lru_cache(maxsize=32)
def _table(kind: str, h: int, w: int) -> torch.Tensor:
    """(len(OPS), bins, 2 signs, 6) float32 parameters, on the host, made once per image size."""
    table = torch.zeros(len(OPS), BINS[kind], 2, 6)
    for op in SPACES[kind]:
        for b in range(BINS[kind]):
            for s in (0, 1):
                p = _params(op, magnitude(kind, op, b, s and op in _SIGNED, h, w), h, w)
                table[OPS.index(op), b, s, :len(p)] = torch.tensor(p, dtype=torch.float64)
    return table


def _fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 a*b + c with one rounding, as torchvision's add_(other, alpha) computes it (a fused
    multiply-add on CPU and CUDA), here with a per-image alpha. In float64 the product is exact;
    TwoSum gives the sum's rounding error, which makes it round-to-odd, and rounding that to
    float32 is the correctly rounded fused result (53 >= 24 + 2 bits)."""
    if a.device.type == "mps":  # no float64 there: plain float32, may differ by 1 on rare pixels
        return a * b + c
    p, c = a.double() * b.double(), c.double()
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)
    even = (s.view(torch.int64) & 1) == 0
    odd = torch.where((err != 0) & even, torch.nextafter(s, err * math.inf), s)
    return odd.float()


def _to_uint8(f: torch.Tensor) -> torch.Tensor:  # truncates, as torchvision's .to(uint8)
    return f.clamp_(0, 255).to(torch.uint8)


def _geometric(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """affine_image/rotate_image batched: torchvision's _affine_grid with one theta per image,
    grid_sample(nearest, zero padding), round."""
    k, _, h, w = x.shape
    theta = p[:, :6].contiguous().view(k, 2, 3)
    base = torch.empty(1, h, w, 3, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h,
                                      device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], device=x.device))
    grid = base.view(1, h * w, 3).expand(k, -1, -1).bmm(rescaled).view(k, h, w, 2)
    out = nnf.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)
    return out.round_().to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """_rgb_to_grayscale_image's float32 luma, floored (its constants are the same for every
    image, so the same ops batched give the same values)."""
    r, g, b = x.unbind(dim=1)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """torchvision's _blend, x.mul(ratio).add_(other, alpha=1 - ratio), with per-image ratios."""
    ratio, alpha = p[:, 0, None, None, None], p[:, 1, None, None, None]
    return _to_uint8(_fma32(other, alpha, x.float() * ratio))


def _color(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else _blend(x, _gray(x), p)  # 1 channel: as is, as PIL


def _contrast(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    gray = _gray(x) if x.shape[1] == 3 else x.float()
    # a sum of integers below 2**24: exact in any order, so the same mean as one image's
    return _blend(x, torch.mean(gray, dim=(-3, -2, -1), keepdim=True), p)


def _sharpness(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """adjust_sharpness_image: the interior blended with its rounded 3x3 blur, borders kept. The
    blur in integers, round(sum / 13): torchvision's float32 kernel [1, 5, 1]/13 rounds to the
    same, as sum / 13 is never within 1/26 of a half (and no conv algorithm can change it)."""
    h, w = x.shape[-2:]
    if h <= 2 or w <= 2:
        return x
    i = x.to(torch.int32)
    total = 4 * i[..., 1:-1, 1:-1] + sum(i[..., dy:dy + h - 2, dx:dx + w - 2]
                                         for dy in range(3) for dx in range(3))
    blur = torch.div(2 * total + 13, 26, rounding_mode="floor")  # no ties to break
    f = x.float()
    inner = f[..., 1:-1, 1:-1]
    inner.copy_(_fma32(blur.float().sub_(inner), p[:, 1, None, None, None], inner))
    return _to_uint8(f)


def _brightness(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return _to_uint8(x.float().mul_(p[:, 0, None, None, None]))  # one float32 multiply


def _posterize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return x & p[:, 0, None, None, None].to(torch.uint8)


def _solarize(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # torchvision compares with the threshold as a float32 scalar
    return torch.where(x >= p[:, 0, None, None, None], x.bitwise_not(), x)


def _autocontrast(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """autocontrast_image with torch.where for its masked assignments (which make a CUDA host
    wait), the same arithmetic otherwise."""
    f = x.float()
    lo, hi = f.amin(dim=(-2, -1), keepdim=True), f.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    inv_scale = torch.where(flat, 1.0, hi.sub_(lo).mul_(1.0 / 255))
    return _to_uint8(f.sub_(torch.where(flat, 0.0, lo)).div_(inv_scale))


def _equalize(x: torch.Tensor, p) -> torch.Tensor:  # torchvision's, batched, no host waits;
    from torchvision.transforms.v2.functional import equalize  # here: it imports torch._dynamo
    return equalize(x)


_APPLY = {"ShearX": _geometric, "ShearY": _geometric, "TranslateX": _geometric,
          "TranslateY": _geometric, "Rotate": _geometric, "Brightness": _brightness,
          "Color": _color, "Contrast": _contrast, "Sharpness": _sharpness,
          "Posterize": _posterize, "Solarize": _solarize, "AutoContrast": _autocontrast,
          "Equalize": _equalize, "Invert": lambda x, p: x.bitwise_not()}


def _round(x: torch.Tensor, ops: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """One op per image: sort by op on the host, gather into op order on the device with one
    copy of the host data, run each op on its slice, gather back."""
    order = torch.argsort(ops, stable=True)
    counts = torch.bincount(ops, minlength=len(OPS)).tolist()
    host = torch.cat([params[order], order[:, None].float(), order.argsort()[:, None].float()], 1)
    if x.device.type == "cuda":
        host = host.pin_memory()
    packed = host.to(x.device, non_blocking=True)
    p, inverse = packed[:, :-2], packed[:, -1].long()
    xs, lo = x.index_select(0, packed[:, -2].long()), counts[0]  # Identity first: left as is
    for op, count in zip(OPS[1:], counts[1:]):
        if count:
            xs[lo:lo + count] = _APPLY[op](xs[lo:lo + count], p[lo:lo + count])
        lo += count
    return xs.index_select(0, inverse)


def apply(x: torch.Tensor, kind: str, draws: torch.Tensor) -> torch.Tensor:
    """x: uint8 (n, c, h, w), c in {1, 3}, any device and memory format; draws: draw()'s rows,
    on the host. uint8 (n, c, h, w) on x's device: each image through its own ops."""
    if kind not in KINDS:
        raise ValueError(f"unknown augmentation policy {kind!r}; choose one of {KINDS}")
    x = x.contiguous()  # the layout torchvision's reductions and kernels see for one image
    n, _, h, w = x.shape
    table = _table(kind, h, w)
    for r in range(ROUNDS):
        ops, bins, signs = draws[3 * r], draws[3 * r + 1], draws[3 * r + 2]
        if n and bool((ops != 0).any()):  # host tensors: no device wait
            x = _round(x, ops, table[ops, bins, signs])
    return x
