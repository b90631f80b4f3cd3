"""Stage train@EXPERIMENT: train one experiment's model; weights and history out.
Stage train_replicate@KEY: the same with --replicate KEY, another seed of it (params.yaml `replicates:`)."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.engine import distributed
from cnnlab.errors import exits_cleanly, warn
from cnnlab.paths import Layout
from cnnlab.pipeline.train import train_experiment


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="a key of `experiments:` in params.yaml")
    parser.add_argument("--replicate", help="a key of `replicates:`: train this seed of the experiment instead")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params = load_params(args.params)
    with distributed.processes() as world:  # CNNLAB_NPROC=N: N ranks run this
        trained = train_experiment(params, args.experiment, Layout(), world, args.replicate)
    if not world.is_main:
        return
    if trained.diverged:
        warn(
            f"{args.replicate or args.experiment}: {trained.diverged}; stopped early, no model written, marked "
            "diverged for evaluate and MLflow; lower train.optimizer.lr (or check the data) and run it again"
        )
        return
    print(
        f"{args.replicate or args.experiment}: trained on {trained.info['device']} in {trained.train_seconds:.1f} s "
        f"({trained.images_per_second:,.0f} images/s), model md5 {trained.model_md5}, MLflow run {trained.run_id}"
    )


if __name__ == "__main__":
    main()
