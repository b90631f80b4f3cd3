"""Stage evaluate_head@TRANSFER: validation metrics, confusion matrix and figures of a transfer experiment."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.errors import exits_cleanly
from cnnlab.paths import Layout
from cnnlab.pipeline.evaluate_head import evaluate_head


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("transfer", help="a key of `transfer:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    metrics = evaluate_head(load_params(args.params), args.transfer, Layout()).metrics
    if "diverged" in metrics:
        print(f"{args.transfer}: not evaluated, its training diverged ({metrics['diverged']})")
        return
    print(f"{args.transfer}: test accuracy {metrics['test_accuracy']:.2%}, loss {metrics['test_loss']:.4f}")


if __name__ == "__main__":
    main()
