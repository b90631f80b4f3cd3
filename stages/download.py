"""Stage download@DATASET: fetch (or generate) a dataset's raw files into data/raw/DATASET."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.data.kinds import load_kind
from cnnlab.errors import exits_cleanly
from cnnlab.paths import Layout


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", help="a key of `datasets:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    dataset = load_params(args.params).dataset(args.dataset)
    for origin in load_kind(dataset.kind).acquire(dataset.name, dataset.acquire, Layout().raw(dataset.name)):
        print(f"{dataset.name}: {origin}")


if __name__ == "__main__":
    main()
