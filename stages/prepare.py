"""Stage prepare@DATASET: raw files -> uint8 tensors per split, stats and pixel permutation."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.data.kinds import load_kind
from cnnlab.data.prepared import check_learnable, write_prepared
from cnnlab.errors import exits_cleanly
from cnnlab.paths import Layout


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help="a key of `datasets:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    dataset = load_params(args.params).dataset(args.dataset)
    layout = Layout()
    splits = load_kind(dataset.kind).read(dataset.acquire, dataset.prepare, layout.raw(dataset.name))
    check_learnable(dataset.name, splits)
    meta = write_prepared(
        dataset.name, dataset.kind, splits, layout.prepared(dataset.name), dataset.prepare.permutation_seed
    )
    print(f"{dataset.name}: {meta.sizes} inputs {meta.input_shape}, train mean {meta.train_mean} std {meta.train_std}")


if __name__ == "__main__":
    main()
