"""Stage report: every experiment's metrics side by side, and the course's findings."""

import argparse

from cnnlab.config.params import load_params
from cnnlab.errors import exits_cleanly
from cnnlab.io import read_json, replaced_atomically, write_json
from cnnlab.paths import Layout
from cnnlab.report import execution_facts, figures, markdown, summarize


@exits_cleanly
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()

    params, layout = load_params(args.params), Layout()
    metrics = {path.stem: read_json(path) for path in sorted(layout.metrics_dir.glob("*.json"))}
    summary = summarize(params, metrics, execution_facts(metrics))
    write_json(layout.summary_json, summary)
    with replaced_atomically(layout.summary_markdown) as tmp:
        tmp.write_text(markdown(summary))
    with replaced_atomically(layout.report_figures) as tmp:
        figures(summary, tmp)
    print(markdown(summary))


if __name__ == "__main__":
    main()
