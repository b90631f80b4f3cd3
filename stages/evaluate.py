"""Stage evaluate@EXPERIMENT: test metrics, confusion matrix and figures for one trained model.
Stage evaluate_replicate@KEY: the same with --replicate KEY, for another seed of it."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.errors import exits_cleanly
from cnnlab.paths import Layout
from cnnlab.pipeline.evaluate import evaluate_experiment


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="a key of `experiments:` in params.yaml")
    parser.add_argument("--replicate", help="a key of `replicates:`: evaluate this seed of the experiment instead")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    evaluated = evaluate_experiment(load_params(args.params), args.experiment, Layout(), args.replicate)
    metrics, timings, run = evaluated.metrics, evaluated.timings, args.replicate or args.experiment
    if "diverged" in metrics:
        print(f"{run}: not evaluated, its training diverged ({metrics['diverged']})")
        return
    print(
        f"{run}: test accuracy {metrics['test_accuracy']:.2%}, loss {metrics['test_loss']:.4f}, "
        f"{timings['inference_ms_per_image']:.2f} ms per image, MLflow run {evaluated.run_id}"
    )


if __name__ == "__main__":
    main()
