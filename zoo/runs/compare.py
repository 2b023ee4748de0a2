"""`stzoo compare EXPERIMENT`: the experiment's runs as a paper-style table, bar charts and loss curves.

Rows are the variants, columns the experiment's benchmark columns (mean ± std over seeds,
best mean in bold), followed by the paper's numbers for the row where the experiment file
gives them. Written as markdown and CSV, logged to the sweep's parent run, and printed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import zoo.runs.tracking as tracking
from zoo.runs.tables import Column, markdown_table, mean_and_spread
from zoo.config.experiment import Experiment
from zoo.runs.sweep import EXPERIMENT_TAG, SCALE_TAG, SEED_TAG, VARIANT_TAG
from zoo.runs.plots import plot_loss_curves


@dataclass
class Comparison:
    experiment: Experiment
    columns: list[Column]
    rows: list[tuple[str, dict[str, list[float]]]]  # variant -> metric key -> values over seeds
    runs: dict[str, list]  # variant -> its finished MLflow runs
    parent_run_id: str | None

    def markdown(self) -> str:
        table = markdown_table(self.rows, self.columns, first="variant")
        papers = [(variant, self.experiment.variants[variant].paper) for variant, _ in self.rows]
        paper_keys = sorted({k for _, numbers in papers for k in numbers})
        if paper_keys:
            lines = ["", f"The paper's numbers ({self.experiment.paper}):", "",
                     "| variant | " + " | ".join(paper_keys) + " |", "|" + "---|" * (len(paper_keys) + 1)]
            for variant, numbers in papers:
                cells = ["-" if numbers.get(k) is None else f"{numbers[k]:.2f}" for k in paper_keys]
                lines.append(f"| {variant} | " + " | ".join(cells) + " |")
            table += "\n" + "\n".join(lines)
        return table

    def write_csv(self, path: Path) -> Path:
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["variant", "seeds"] + [f"{c.key} mean" for c in self.columns] + [f"{c.key} std" for c in self.columns])
            for variant, values in self.rows:
                stats = [mean_and_spread(values[c.key]) if values.get(c.key) else (None, None) for c in self.columns]
                seeds = max((len(values.get(c.key, [])) for c in self.columns), default=0)
                writer.writerow([variant, seeds] + [s[0] for s in stats] + [s[1] for s in stats])
        return path


def collect(experiment: Experiment, scale: str, uri: str | None = None) -> Comparison:
    uri = uri or tracking.tracking_uri()
    client = tracking.client(uri)
    found = client.get_experiment_by_name(experiment.name)
    runs_by_variant: dict[str, list] = {v: [] for v in experiment.variants}
    parent_id = None
    if found is not None:
        runs = client.search_runs([found.experiment_id],
                                  filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment.name}' and tags.`{SCALE_TAG}` = '{scale}'",
                                  max_results=5000)
        for run in runs:
            tags = run.data.tags
            if tags.get("stzoo.role") == "sweep":
                parent_id = run.info.run_id
            elif run.info.status == "FINISHED" and tags.get(VARIANT_TAG) in runs_by_variant:
                runs_by_variant[tags[VARIANT_TAG]].append(run)
    keys = experiment.columns or sorted({k for runs in runs_by_variant.values() for r in runs for k in r.data.metrics
                                         if "." in k and not k.startswith("system/")})
    columns = [Column(key, key) for key in keys]
    rows = []
    for variant, runs in runs_by_variant.items():
        if not runs:
            continue
        runs.sort(key=lambda r: int(r.data.tags.get(SEED_TAG, 0)))
        rows.append((variant, {c.key: [r.data.metrics[c.key] for r in runs if c.key in r.data.metrics] for c in columns}))
    return Comparison(experiment, columns, rows, runs_by_variant, parent_id)


def bar_chart(comparison: Comparison, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [variant for variant, _ in comparison.rows]
    columns = comparison.columns
    figure, axes = plt.subplots(1, len(columns), figsize=(max(4, 3.2 * len(columns)), 3.6), squeeze=False)
    for axis, column in zip(axes[0], columns):
        means, spreads = [], []
        for _, values in comparison.rows:
            mean, spread = mean_and_spread(values[column.key]) if values.get(column.key) else (0.0, 0.0)
            means.append(mean)
            spreads.append(spread)
        axis.bar(range(len(variants)), means, yerr=spreads, capsize=3, color="#4c72b0")
        axis.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=7)
        axis.set_title(column.title, fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(comparison.experiment.name, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def loss_curves(comparison: Comparison, uri: str, path: Path) -> Path | None:
    client = tracking.client(uri)
    curves = {}
    for variant, runs in comparison.runs.items():
        for run in runs[:1]:  # one seed per variant keeps the plot readable
            points = client.get_metric_history(run.info.run_id, "loss")
            if points:
                curves[variant] = sorted((p.step, p.value) for p in points)
    if not curves:
        return None
    return plot_loss_curves(curves, path, f"{comparison.experiment.name}: training loss (seed {comparison.experiment.seeds[0]})")


def compare(experiment: Experiment, scale: str, out_dir: Path, uri: str | None = None) -> Comparison:
    uri = uri or tracking.tracking_uri()
    comparison = collect(experiment, scale, uri)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(f"# {experiment.name} ({scale})\n\n{experiment.paper}\n\n{comparison.markdown()}\n")
    comparison.write_csv(out_dir / "table.csv")
    if comparison.rows:
        bar_chart(comparison, out_dir / "metrics.png")
        loss_curves(comparison, uri, out_dir / "training_loss.png")
    if comparison.parent_run_id:
        tracking.log_directory(uri, comparison.parent_run_id, out_dir, "comparison")
    return comparison
