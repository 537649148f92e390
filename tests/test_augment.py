import math

import torch

from pytorch_cli.data import augment
from pytorch_cli.data.augment import Augment

CROP_FLIP = Augment("crop-flip")


def test_crop_is_a_window_of_the_zero_padded_image_and_flip_mirrors():
    x = torch.randint(1, 256, (40, 3, 32, 32), dtype=torch.uint8)
    out = augment.crop_flip(x, CROP_FLIP, augment.draw(40, CROP_FLIP, (32, 32), 7))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    flipped = 0
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(out[i], w) for w in windows)
        mirrored = any(torch.equal(out[i], w.flip(2)) for w in windows)
        assert plain or mirrored
        flipped += mirrored and not plain
    assert 5 < flipped < 35  # about half are mirrored
    again = augment.crop_flip(x, CROP_FLIP, augment.draw(40, CROP_FLIP, (32, 32), 7))
    assert torch.equal(again, out)  # same seed, same batch

def test_each_crop_is_its_drawn_window_in_either_layout_and_for_large_images_too():
    """The drawn (dy, dx, flip) picks the window, whether the index comes from the table of every
    pattern (32 px) or from row and column tables (96 px: the whole table would pass
    TABLE_BYTES), and a channels-last crop holds the same values in channels-last memory."""
    for size in (32, 96):
        assert (2 * 9 * 9 * size * size * 8 > augment.TABLE_BYTES) == (size == 96)
        x = torch.randint(0, 256, (12, 3, size, size), dtype=torch.uint8)
        draws = augment.draw(12, CROP_FLIP, (size, size), 5)
        out = augment.crop_flip(x, CROP_FLIP, draws)
        padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
        for i in range(len(x)):
            dy, dx, flip = (int(v) for v in draws[:, i])
            window = padded[i, :, dy:dy + size, dx:dx + size]
            assert torch.equal(out[i], window.flip(2) if flip else window)
        last = augment.crop_flip(x, CROP_FLIP, draws, torch.channels_last)
        assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, out)


def test_reflect_padding_crops_windows_of_the_mirrored_border():
    aug = Augment("crop", pad=2, pad_mode="reflect")
    x = torch.randint(0, 256, (30, 3, 32, 32), dtype=torch.uint8)
    draws = augment.draw(30, aug, (32, 32), 3)
    assert int(draws[:2].max()) <= 4  # 2 px each way
    out = augment.crop_flip(x, aug, draws)
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for i in range(len(x)):
        dy, dx = int(draws[0, i]), int(draws[1, i])
        assert torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])


def test_erased_boxes_follow_torchvisions_random_erasing():
    """The share of the image erased and the boxes' aspect have torchvision's distribution (its
    own get_params drawn as many times), every box lies inside the image, and p is the share of
    images erased."""
    from torchvision.transforms import v2
    n, size = 4000, (32, 32)
    top, left, h, w = augment.draw_erasing(n, 1.0, size, torch.Generator().manual_seed(0))
    assert (h > 0).float().mean() > 0.99  # nearly every box fits in ten tries
    assert (top >= 0).all() and (top + h <= 32).all() and (left + w <= 32).all()
    torch.manual_seed(0)
    theirs = [v2.RandomErasing.get_params(torch.zeros(3, 32, 32), (0.02, 0.33), (0.3, 3.3))
              for _ in range(n)]
    share = (h * w).float().mean() / 1024
    their_share = sum(b[2] * b[3] for b in theirs) / n / 1024
    assert abs(share - their_share) < 0.01 and 0.15 < share < 0.19
    aspect = (h[h > 0].float() / w[h > 0]).log().mean()
    assert abs(aspect - sum(math.log(b[2] / b[3]) for b in theirs) / n) < 0.05
    half = augment.draw_erasing(n, 0.5, size, torch.Generator().manual_seed(1))
    assert 0.47 < (half[2] > 0).float().mean() < 0.53


def test_erasing_sets_the_box_to_the_mean_and_leaves_the_rest():
    aug = Augment("none", erasing=1.0)
    draws = augment.draw(16, aug, (28, 28), seed=4)
    x = torch.randn(16, 1, 28, 28) + 5
    out = augment.erase(x.clone(), aug, draws)
    for i in range(16):
        top, left, h, w = draws[aug.erase_rows, i].tolist()
        assert (out[i, :, top:top + h, left:left + w] == 0).all()
        assert int((out[i] == 0).sum()) == h * w  # nothing outside the box
    assert torch.equal(augment.draw(16, aug, (28, 28), seed=4), draws)


def test_a_policy_or_erasing_added_leaves_the_crops_as_they_were():
    plain = augment.draw(50, CROP_FLIP, (32, 32), 9)
    for added in (Augment("trivialaugment"), Augment("crop-flip", erasing=0.5)):
        assert torch.equal(augment.draw(50, added, (32, 32), 9)[:3], plain)


def test_resized_crops_are_torchvisions_resized_crop_and_flip_per_image():
    """--augment resized-crop: each image's drawn box, resized back (bilinear, antialiased) and
    flipped where drawn, is torchvision.transforms.v2's resized_crop and hflip of that image,
    within 1 of 255 (its uint8 kernels round differently), in either memory layout."""
    from torchvision.transforms.v2 import functional as F
    aug = Augment("resized-crop", scale=0.08)
    x = torch.randint(0, 256, (24, 3, 32, 40), dtype=torch.uint8)
    draws = augment.draw(24, aug, (32, 40), 7)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = augment.apply(x, aug, draws, draws, layout)
        assert out.is_contiguous(memory_format=layout) and out.dtype == torch.uint8
        for i in range(24):
            top, left, h, w = draws[aug.box_rows, i].tolist()
            theirs = F.resized_crop(x[i], top, left, h, w, [32, 40], antialias=True)
            theirs = F.horizontal_flip(theirs) if draws[2, i] else theirs
            assert (theirs.int() - out[i].int()).abs().max() <= 1
    assert 0 < draws[2].sum() < 24  # some flipped, some not


def test_resized_crop_boxes_follow_torchvisions_random_resized_crop():
    """The boxes' share of the area and aspect have torchvision's distribution (its own
    get_params drawn as many times), each lies inside the image; where no try fits (a 4x100
    strip at scale 1), torchvision's fallback: the whole height, its widest aspect, centred."""
    from torchvision.transforms import v2
    n, scale = 4000, 0.25
    g = torch.Generator().manual_seed(0)
    top, left, h, w = augment.draw_resized_crop(n, scale, (32, 48), g)
    assert (top >= 0).all() and (top + h <= 32).all()
    assert (left >= 0).all() and (left + w <= 48).all()
    torch.manual_seed(0)
    theirs = [v2.RandomResizedCrop.get_params(torch.zeros(3, 32, 48), (scale, 1.0), (3 / 4, 4 / 3))
              for _ in range(n)]
    share = (h * w).float().mean() / (32 * 48)
    their_share = sum(b[2] * b[3] for b in theirs) / n / (32 * 48)
    assert abs(share - their_share) < 0.01
    aspect = (w.float() / h).log().mean()
    assert abs(aspect - sum(math.log(b[3] / b[2]) for b in theirs) / n) < 0.02
    strip = augment.draw_resized_crop(3, 1.0, (4, 100), torch.Generator().manual_seed(0))
    assert strip.T.tolist() == [[0, 47, 4, 5]] * 3  # 4 x round(4 x 4/3), (100 - 5) // 2
