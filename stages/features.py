"""Stage features@TRANSFER: a frozen backbone's features for every image, computed once."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.errors import exits_cleanly
from cnnlab.paths import Layout
from cnnlab.pipeline.features import compute_features


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("transfer", help="a key of `transfer:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    record, timings = compute_features(load_params(args.params), args.transfer, Layout())
    backbone = f"{record.config.name} ({record.config.weights} weights, {record.precision})"
    if record.images:
        print(
            f"{args.transfer}: {backbone} features of {record.images} images in {timings.seconds:.1f} s "
            f"({record.images / timings.seconds:,.1f} images/s, {timings.latency_ms:.1f} ms for one image), "
            f"{record.feature_dim} per image"
        )
    else:
        print(f"{args.transfer}: {backbone}; fine-tuning {record.config.finetune_layers} layers, so no feature cache")
    for row in record.imagenet_preview:
        print(f"  validation image {row['test_index']}: " + ", ".join(f"{c} {p:.1%}" for c, p in row["top5"]))


if __name__ == "__main__":
    main()
