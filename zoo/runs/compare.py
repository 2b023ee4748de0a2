"""`stzoo compare EXPERIMENT`: the experiment's runs as a paper-style table with its uncertainty, bar charts
and loss curves.

Rows are the variants (mean ± std over seeds, the number of seeds), columns the experiment's benchmark
columns, with the chance level of each column and the test items each seed was scored on. A second table
gives each variant minus the reference variant (the experiment's ``reference``, else its first variant with runs)
with a 95% interval from a paired bootstrap over the test items (zoo.evaluation.bootstrap); a star marks
the differences whose interval excludes 0. A column no run logged is an error naming the nearest logged
names; a value a run did not log is shown as missing, never as 0. Written as markdown and CSV, logged
to the sweep's parent run, and printed.
"""

from __future__ import annotations

import csv
import difflib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException

import zoo.runs.tracking as tracking
from components.config import RecipeError
from zoo.config.experiment import Experiment
from zoo.evaluation.bootstrap import REPLICATES, Interval, ScoredItems
from zoo.evaluation.chance import chance_level, column_items
from zoo.runs.expectations import Estimates, Verdict, judge, verdict_table
from zoo.runs.plots import plot_loss_curves
from zoo.runs.sweep import EXPERIMENT_TAG, FINGERPRINT_TAG, SCALE_TAG, SEED_TAG, VARIANT_TAG, results_fingerprint
from zoo.runs.tables import Column, format_number, markdown_table, mean_and_spread


@dataclass
class Comparison:
    experiment: Experiment
    columns: list[Column]
    rows: list[tuple[str, dict[str, list[float]]]]  # variant -> metric key -> values over seeds
    runs: dict[str, list]  # variant -> its finished MLflow runs, in seed order
    parent_run_id: str | None
    reference: str | None = None
    differences: dict[str, dict[str, Interval]] = field(default_factory=dict)  # variant -> column -> difference
    chance: dict[str, float | None] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)  # column -> test items per seed
    notes: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)

    def markdown(self) -> str:
        table = markdown_table(self.rows, self.columns, first="variant", seeds=True)
        table += "\n" + "| chance | | " + " | ".join(format_number(self.chance.get(c.key)) for c in self.columns) + " |"
        table += "\n" + "| test items per seed | | " + " | ".join(str(self.items.get(c.key, "?")) for c in self.columns) + " |"
        parts = [table]
        if self.differences:
            parts.append(self.difference_table())
        if self.verdicts:
            parts.append(verdict_table(self.verdicts))
        parts += [f"- {note}" for note in self.notes]
        if paper := self.paper_table():
            parts.append(paper)
        return "\n\n".join(parts)

    def difference_table(self) -> str:
        lines = [f"Difference from {self.reference} (mean over seeds, 95% interval from a paired bootstrap over the test "
                 "items; * = the interval excludes 0):", "",
                 "| variant | " + " | ".join(c.title for c in self.columns) + " |", "|" + "---|" * (len(self.columns) + 1)]
        for variant, _ in self.rows:
            if variant == self.reference:
                continue
            found = self.differences.get(variant, {})
            cells = [format_difference(found.get(c.key)) for c in self.columns]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def paper_table(self) -> str | None:
        papers = [(variant, self.experiment.variants[variant].paper) for variant, _ in self.rows]
        paper_keys = sorted({k for _, numbers in papers for k in numbers})
        if not paper_keys:
            return None
        lines = [f"The paper's numbers ({self.experiment.paper}):", "",
                 "| variant | " + " | ".join(paper_keys) + " |", "|" + "---|" * (len(paper_keys) + 1)]
        for variant, numbers in papers:
            cells = ["-" if numbers.get(k) is None else f"{numbers[k]:.2f}" for k in paper_keys]
            lines.append(f"| {variant} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def write_csv(self, path: Path) -> Path:
        keys = [c.key for c in self.columns]
        header = ["variant", "seeds"] + [f"{k} {what}" for what in ("mean", "std", "diff", "diff low", "diff high") for k in keys]
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for variant, values in self.rows:
                stats = [mean_and_spread(values[k]) if values.get(k) else (None, None) for k in keys]
                found = self.differences.get(variant, {})
                extra = [[getattr(found.get(k), name, None) for k in keys] for name in ("value", "low", "high")]
                seeds = max((len(values.get(k, [])) for k in keys), default=0)
                writer.writerow([variant, seeds] + [s[0] for s in stats] + [s[1] for s in stats] + sum(extra, []))
            writer.writerow(["chance", ""] + [self.chance.get(k) for k in keys] + [""] * (4 * len(keys)))
        return path


def format_difference(difference: Interval | None) -> str:
    if difference is None:
        return "n/a"
    star = " *" if difference.excludes_zero else ""
    return f"{difference.value:+.2f} [{difference.low:+.2f}, {difference.high:+.2f}]{star}"


@dataclass
class ExperimentRuns:
    """The finished runs of each variant (seed order) of the experiment file as it is now, the sweep's parent
    run, and how many finished runs of each variant were left out because another recipe made them."""
    by_variant: dict[str, list]
    parent_id: str | None
    left_out: dict[str, int]


def experiment_runs(experiment: Experiment, scale: str, uri: str, extra: list[str] | None = None) -> ExperimentRuns:
    """A run counts when its results fingerprint is the one the file (with the sweep's ``extra`` overrides) gives
    its variant and seed now: runs of an earlier version of the file, or of a recipe edited since, are left out
    rather than averaged in."""
    client = tracking.client(uri)
    found = client.get_experiment_by_name(experiment.name)
    kept = ExperimentRuns({v: [] for v in experiment.variants}, None, {})
    expected: dict[tuple[str, str], str] = {}
    runs = [] if found is None else client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{EXPERIMENT_TAG}` = '{experiment.name}' and tags.`{SCALE_TAG}` = '{scale}'",
        max_results=5000)
    for run in runs:
        tags = run.data.tags
        variant, seed = tags.get(VARIANT_TAG), tags.get(SEED_TAG, "0")
        if tags.get("stzoo.role") == "sweep":
            kept.parent_id = run.info.run_id
        if run.info.status != "FINISHED" or variant not in kept.by_variant:
            continue
        if (variant, seed) not in expected:
            expected[variant, seed] = results_fingerprint(experiment, variant, int(seed), scale, extra)
        if tags.get(FINGERPRINT_TAG) == expected[variant, seed]:
            kept.by_variant[variant].append(run)
        else:
            kept.left_out[variant] = kept.left_out.get(variant, 0) + 1
    for variant_runs in kept.by_variant.values():
        variant_runs.sort(key=lambda r: int(r.data.tags.get(SEED_TAG, 0)))
    return kept


def left_out_note(left_out: dict[str, int]) -> str:
    counts = ", ".join(f"{n} of {variant}" for variant, n in sorted(left_out.items()))
    return (f"left out {sum(left_out.values())} finished runs made by another version of the experiment file or its "
            f"recipes ({counts}): `stzoo sweep` with the file as it is now runs what they would have measured")


def check_columns(experiment: Experiment, columns: list[str], logged: set[str]) -> None:
    """A column that no run logged is a typo or a missing benchmark prefix: refuse it, naming the nearest names."""
    for column in columns:
        if column in logged:
            continue
        ending = sorted(name for name in logged if name.endswith("." + column))
        near = ending or difflib.get_close_matches(column, sorted(logged), n=3, cutoff=0.5)
        hint = f"; the runs logged {', '.join(near[:3])}" if near else "; no logged name is close"
        raise RecipeError(f"{experiment.source}: columns: {column!r} matches no metric the runs logged{hint} "
                          "(columns are <benchmark>.<task>.<column>, the benchmark named under the recipe's data.eval)")


def collect(experiment: Experiment, scale: str, uri: str | None = None, extra: list[str] | None = None) -> Comparison:
    uri = uri or tracking.tracking_uri()
    found = experiment_runs(experiment, scale, uri, extra)
    runs_by_variant = found.by_variant
    logged = {k for runs in runs_by_variant.values() for r in runs for k in r.data.metrics}
    keys = experiment.columns or sorted(k for k in logged if "." in k and not k.startswith("system/"))
    if logged:
        check_columns(experiment, keys, logged)
    columns = [Column(key, key) for key in keys]
    rows = [(variant, {c.key: [r.data.metrics[c.key] for r in runs if c.key in r.data.metrics] for c in columns})
            for variant, runs in runs_by_variant.items() if runs]
    # The named reference, else the first variant (in file order) that has finished runs.
    reference = experiment.reference or next((variant for variant, _ in rows), None)
    comparison = Comparison(experiment, columns, rows, runs_by_variant, found.parent_id, reference=reference)
    if found.left_out:
        comparison.notes.append(left_out_note(found.left_out))
    return comparison


def scored_items(uri: str, run, benchmark: str, directory: Path) -> ScoredItems | None:
    """The run's per-entry results on ``benchmark`` (eval/BENCHMARK/predictions.jsonl), None when not kept."""
    try:
        path = tracking.client(uri).download_artifacts(run.info.run_id, f"eval/{benchmark}/predictions.jsonl", str(directory))
    except (MlflowException, OSError):  # the run kept no such file
        return None
    return ScoredItems.read(path)


def fetch_items(comparison: Comparison, uri: str) -> dict[tuple[str, str], list[ScoredItems | None]]:
    """(variant, benchmark) -> each run's per-entry results, in the runs' (seed) order."""
    benchmarks = sorted({c.key.split(".", 1)[0] for c in comparison.columns if "." in c.key})
    with tempfile.TemporaryDirectory() as scratch:
        items = {(variant, benchmark): [scored_items(uri, run, benchmark, Path(scratch) / run.info.run_id) for run in runs]
                 for variant, runs in comparison.runs.items() if runs for benchmark in benchmarks}
    without = sorted({variant for (variant, _), found in items.items() if any(x is None for x in found)})
    if without:
        comparison.notes.append(f"no per-entry results kept for {', '.join(without)} (runs evaluated before they were): "
                                "no chance level, test items or interval for them")
    return items


def seeds_of(comparison: Comparison, items: dict, benchmark: str) -> dict[str, dict]:
    """variant -> {seed: ScoredItems} for ``benchmark``, from the runs that kept per-entry results."""
    found: dict[str, dict] = {}
    for variant, runs in comparison.runs.items():
        kept = items.get((variant, benchmark), [])
        found[variant] = {run.data.tags.get(SEED_TAG): x for run, x in zip(runs, kept) if x is not None}
    return found


def chance_and_items(columns: list[Column], first_kept: dict[str, ScoredItems]) -> tuple[dict[str, float | None], dict[str, int]]:
    """Each column's chance level and test items, from one run's per-entry results on its benchmark
    (``first_kept``: benchmark -> them); columns of a benchmark no run kept get neither."""
    chance, items = {}, {}
    for column in [c for c in columns if "." in c.key]:
        benchmark, rest = column.key.split(".", 1)
        if benchmark in first_kept:
            chance[column.key] = chance_level(first_kept[benchmark].entries, rest)
            items[column.key] = column_items(first_kept[benchmark].entries, rest)
    return chance, items


def add_chance_and_items(comparison: Comparison, items: dict) -> None:
    first_kept: dict[str, ScoredItems] = {}
    for (_, benchmark), found in items.items():
        for kept in found:
            if kept is not None:
                first_kept.setdefault(benchmark, kept)
    comparison.chance, comparison.items = chance_and_items(comparison.columns, first_kept)


def add_differences(comparison: Comparison, estimates: Estimates) -> None:
    """Each variant minus the reference, per column, over the seeds both ran."""
    reference = comparison.reference
    if reference is not None and not comparison.runs.get(reference):
        comparison.notes.append(f"the reference variant {reference} has no finished runs: no differences")
        return
    for variant, runs in comparison.runs.items():
        if variant == reference or not runs:
            continue
        found = {c.key: estimates.difference(variant, reference, c.key) for c in comparison.columns if "." in c.key}
        found = {key: difference for key, difference in found.items() if difference is not None}
        if found:
            comparison.differences[variant] = found


def add_uncertainty(comparison: Comparison, uri: str, replicates: int = REPLICATES) -> None:
    """Chance levels, test items, differences from the reference and the expectations' verdicts, from each
    run's per-entry results."""
    items = fetch_items(comparison, uri)
    add_chance_and_items(comparison, items)
    if replicates <= 0:
        return
    benchmarks = sorted({benchmark for _, benchmark in items})
    estimates = Estimates({b: seeds_of(comparison, items, b) for b in benchmarks}, [c.key for c in comparison.columns],
                          replicates)
    add_differences(comparison, estimates)
    for expectation in comparison.experiment.expectations:
        comparison.verdicts.append(judge(expectation, estimates, comparison.chance.get(expectation.column)))


def bar_chart(comparison: Comparison, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [variant for variant, _ in comparison.rows]
    columns = comparison.columns
    figure, axes = plt.subplots(1, len(columns), figsize=(max(4, 3.2 * len(columns)), 3.6), squeeze=False)
    for axis, column in zip(axes[0], columns):
        for position, (_, values) in enumerate(comparison.rows):
            if not values.get(column.key):  # missing is drawn as missing, never as a zero bar
                axis.text(position, 0, "missing", rotation=90, ha="center", va="bottom", fontsize=7, color="#b03030")
                continue
            mean, spread = mean_and_spread(values[column.key])
            axis.bar(position, mean, yerr=spread, capsize=3, color="#4c72b0")
        if comparison.chance.get(column.key) is not None:
            axis.axhline(comparison.chance[column.key], color="#888888", linestyle="--", linewidth=1, label="chance")
            axis.legend(fontsize=6)
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


def compare(experiment: Experiment, scale: str, out_dir: Path, uri: str | None = None,
            replicates: int = REPLICATES, extra: list[str] | None = None) -> Comparison:
    """``extra``: the ``--set`` overrides the sweep ran with (they are part of its children's fingerprints)."""
    uri = uri or tracking.tracking_uri()
    comparison = collect(experiment, scale, uri, extra)
    if comparison.rows:
        add_uncertainty(comparison, uri, replicates)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "table.md").write_text(f"# {experiment.name} ({scale})\n\n{experiment.paper}\n\n{comparison.markdown()}\n")
    comparison.write_csv(out_dir / "table.csv")
    if comparison.rows:
        bar_chart(comparison, out_dir / "metrics.png")
        loss_curves(comparison, uri, out_dir / "training_loss.png")
    if comparison.parent_run_id:
        tracking.log_directory(uri, comparison.parent_run_id, out_dir, "comparison")
    return comparison
