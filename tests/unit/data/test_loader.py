"""Data on the device: seeded batches, the normaliser, the fixed pixel permutation."""

from __future__ import annotations

import torch

from cnnlab.data.loader import batch_indices, make_normalizer, permute_pixels
from cnnlab.data.prepared import DatasetMeta

CPU = torch.device("cpu")


def meta(shape, is_image, mean=(0.0,), std=(1.0,), course=None) -> DatasetMeta:
    return DatasetMeta("t", "t", tuple("abc"), shape, is_image, mean, std, course, course and (0.3081,), {}, "synthetic")


def test_minibatch_shuffling_is_seeded_and_covers_every_sample_once():
    generator = torch.Generator().manual_seed(0)
    batches = list(batch_indices(130, 64, CPU, generator))
    assert [len(b) for b in batches] == [64, 64, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(130))
    again = list(batch_indices(130, 64, CPU, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))


def test_normalizer_matches_totensor_then_normalize():
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    normalize = make_normalizer(meta((1, 28, 28), True, course=(0.1307,)), "course", CPU)
    expected = (images.float() / 255 - 0.1307) / 0.3081
    assert torch.allclose(normalize(images), expected, atol=1e-5)


def test_pixel_permutation_is_one_fixed_permutation_for_all_images():
    images = torch.arange(2 * 9, dtype=torch.uint8).view(2, 1, 3, 3)
    permutation = torch.tensor([8, 7, 6, 5, 4, 3, 2, 1, 0])
    permuted = permute_pixels(images, permutation)
    assert permuted[0, 0].flatten().tolist() == list(range(8, -1, -1))
    assert permuted[1, 0].flatten().tolist() == list(range(17, 8, -1))
