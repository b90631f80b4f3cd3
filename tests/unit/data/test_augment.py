"""Whole-batch augmentation does per image what torchvision's RandomCrop(padding) and flip do."""

import torch
import torch.nn.functional as F

from cnnlab.config.experiments import AugmentConfig
from cnnlab.data.augment import alternating_flips, augment, random_crop, random_flip


def test_random_crop_is_a_window_of_the_zero_padded_image():
    images = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0))
    padded = F.pad(images, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(cropped[i], padded[i, :, dy : dy + 8, dx : dx + 8])]
        assert matches, f"image {i} is not a crop of its padded original"
        offsets.add(matches[0])
    assert len(offsets) > 10, "offsets differ from image to image"


def test_random_flip_mirrors_about_half_the_images():
    images = torch.randint(0, 256, (400, 1, 4, 4), dtype=torch.uint8)
    flipped = random_flip(images, torch.Generator().manual_seed(0))
    mirrored = [torch.equal(f, i.flip(2)) and not torch.equal(f, i) for f, i in zip(flipped, images)]
    kept = [torch.equal(f, i) for f, i in zip(flipped, images)]
    assert all(m or k for m, k in zip(mirrored, kept))
    assert 150 < sum(mirrored) < 250


def test_a_reflected_crop_is_a_window_of_the_reflect_padded_image():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    cropped = random_crop(images, 2, torch.Generator().manual_seed(0), "reflect")
    generator = torch.Generator().manual_seed(0)
    top, left = torch.randint(0, 5, (16, 1), generator=generator), torch.randint(0, 5, (16, 1), generator=generator)
    padded = F.pad(images.float(), (2, 2, 2, 2), mode="reflect").to(torch.uint8)
    for i in range(16):
        assert torch.equal(cropped[i], padded[i, :, top[i, 0] : top[i, 0] + 8, left[i, 0] : left[i, 0] + 8])


def test_an_alternating_flip_shows_every_image_both_ways_one_epoch_after_the_other():
    flips = alternating_flips(1000, seed=7, device=torch.device("cpu"))
    assert torch.equal(flips, alternating_flips(1000, seed=7, device=torch.device("cpu"))), "seeded"
    assert 400 < int(flips.sum()) < 600
    images = torch.arange(4 * 2, dtype=torch.uint8).view(4, 1, 1, 2)
    odd = augment(images, AugmentConfig(flip="alternate"), torch.Generator(), flips[:4])
    even = augment(images, AugmentConfig(flip="alternate"), torch.Generator(), ~flips[:4])
    for image, once, twice, flipped in zip(images, odd, even, flips[:4]):
        assert torch.equal(once, image.flip(2) if flipped else image)
        assert torch.equal(twice, image if flipped else image.flip(2))
