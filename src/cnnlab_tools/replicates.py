"""Write params.yaml's `replicates:`: every experiment named runs with this many seeds in all.

    python -m cnnlab_tools.replicates --seeds 5 mnist_fc mnist_cnn     # seeds train.seed+1 .. +4 added
    python -m cnnlab_tools.replicates --seeds 1 mnist_fc                # back to one seed: its replicates removed

The seeds added are the experiment's `train.seed` plus 1, 2, ...; the experiment's own run is the first.
The file keeps its comments and layout (ruamel.yaml's round trip). Then `dvc repro` trains only the new ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from cnnlab.config.params import PARAMS_FILE, load_params
from cnnlab.config.replicates import replicate_key
from cnnlab.errors import exits_cleanly


def set_seeds(path: Path, experiments: list[str], count: int) -> dict[str, int]:
    """Give each of `experiments` `count` seeds in all; returns the replicates now listed for them."""
    params = load_params(path)  # validates, and names an unknown experiment in one line
    for name in experiments:
        params.experiment(name)
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # long flow-style lines stay one line
    yaml.indent(mapping=2, sequence=4, offset=2)
    document = yaml.load(path.read_text())
    replicates = document.get("replicates")
    if replicates is None:
        replicates = document["replicates"] = CommentedMap()
    for key in [k for k, v in replicates.items() if v["experiment"] in experiments]:
        del replicates[key]
    written = {}
    for name in experiments:
        config = params.experiment(name)
        for offset in range(1, count):
            seed = config.train.seed + offset
            entry = CommentedMap(experiment=name, dataset=config.dataset, seed=seed)
            entry.fa.set_flow_style()
            replicates[replicate_key(name, seed)] = entry
            written[replicate_key(name, seed)] = seed
    with open(path, "w") as out:
        yaml.dump(document, out)
    load_params(path)  # what was written is valid params
    return written


@exits_cleanly
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--seeds", type=int, required=True, help="seeds in all, the experiment's own included")
    parser.add_argument("--params", default=PARAMS_FILE)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    written = set_seeds(Path(args.params), args.experiments, args.seeds)
    listed = ", ".join(written) or "none"
    print(f"{args.params}: {len(written)} replicate(s) of {', '.join(args.experiments)}: {listed}")


if __name__ == "__main__":
    main()
