"""Stage evaluate@EXPERIMENT: test metrics, confusion matrix and figures for one trained model."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.errors import exits_cleanly
from cnnlab.paths import Layout
from cnnlab.pipeline.evaluate import evaluate_experiment


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="a key of `experiments:` in params.yaml")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    evaluated = evaluate_experiment(load_params(args.params), args.experiment, Layout())
    metrics, timings = evaluated.metrics, evaluated.timings
    print(
        f"{args.experiment}: test accuracy {metrics['test_accuracy']:.2%}, loss {metrics['test_loss']:.4f}, "
        f"{timings['inference_ms_per_image']:.2f} ms per image, MLflow run {evaluated.run_id}"
    )


if __name__ == "__main__":
    main()
