"""Stage head@TRANSFER: train the new last layer on the cached features (or fine-tune from images)."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.errors import exits_cleanly, warn
from cnnlab.paths import Layout
from cnnlab.pipeline.head import train_head


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("transfer", help="a key of `transfer:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    trained = train_head(load_params(args.params), args.transfer, Layout())
    if trained.diverged:
        warn(
            f"{args.transfer}: {trained.diverged}; stopped early, no model written, marked diverged for "
            "evaluate_head and MLflow; lower head.train.optimizer.lr and run it again"
        )
        return
    info = trained.info
    print(
        f"{args.transfer}: head trained ({info['mode']}) on {info['device']} in {trained.train_seconds:.2f} s, "
        f"{info['trainable_param_count']:,} trainable parameters, MLflow run {trained.run_id}"
    )


if __name__ == "__main__":
    main()
