"""`python -m cnnlab_tools.replicates`: params.yaml's seeds written by count, its comments and layout kept."""

from __future__ import annotations

import subprocess
import sys

import yaml

from cnnlab.config.params import load_params
from conftest import REPO


def test_seeds_are_set_by_count_and_the_rest_of_the_file_is_untouched(tmp_path):
    path = tmp_path / "params.yaml"
    original = subprocess.run(["git", "show", ":params.yaml"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout
    path.write_text(original)

    def tool(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cnnlab_tools.replicates", "--params", str(path), *args],
                              capture_output=True, text=True)

    done = tool("--seeds", "3", "cifar_vgg", "mnist_fc")
    assert done.returncode == 0, done.stderr
    assert "4 replicate(s) of cifar_vgg, mnist_fc: cifar_vgg-seed1, cifar_vgg-seed2, mnist_fc-seed1, mnist_fc-seed2" in done.stdout
    params = load_params(path)
    assert params.seeds("cifar_vgg") == {"cifar_vgg": 0, "cifar_vgg-seed1": 1, "cifar_vgg-seed2": 2}
    assert params.seeds("mnist_fc") == {"mnist_fc": 0, "mnist_fc-seed1": 1, "mnist_fc-seed2": 2}
    assert params.seeds("mnist_cnn") == load_params_from(original).seeds("mnist_cnn"), "others untouched"
    changed = [line for line in path.read_text().splitlines() if line not in original.splitlines()]
    assert changed == ["  cifar_vgg-seed1: {experiment: cifar_vgg, dataset: cifar10, seed: 1}",
                       "  cifar_vgg-seed2: {experiment: cifar_vgg, dataset: cifar10, seed: 2}"], (
        "comments, order and layout kept: only the new lines differ")

    assert tool("--seeds", "1", "mnist_fc").returncode == 0
    assert load_params(path).seeds("mnist_fc") == {"mnist_fc": 0}
    bad = tool("--seeds", "2", "mnist_fcc")
    assert bad.returncode == 1 and bad.stderr.startswith("error: experiment 'mnist_fcc' is not in params.yaml"), bad.stderr


def load_params_from(text: str):
    from cnnlab.config.params import parse_params

    return parse_params(yaml.safe_load(text))
