"""``ftlit plot``: loss, metric and learning-rate curves of a run, and its best and test scores, from metrics.csv.

Every ``ftlit fit`` / ``test`` writes Lightning CSV logs under ``<default_root_dir>/csv/version_N/metrics.csv``; each
row holds only the keys logged at that step. A resumed fit writes a new version that continues the step count, so the
fit's versions are merged in step order (a later version wins over rows it re-logs); versions without training rows
(``ftlit test`` / ``validate``) are reported in ``summary.json``, not drawn as curves. matplotlib (the ``plots`` extra)
is imported only when drawing, through its Agg canvas: no display and no change to pyplot's global backend.

Which way a metric is better comes from the run itself when it says so: ``<run>/metric-directions.json`` (written at
the start of each fit) and the ``higher_is_better`` of ``<run>/test-results.json`` (written by ``ftlit test``); a
word of the metric's name decides only for runs without them. The drawing functions return a matplotlib Figure (or
None: nothing to draw) that ``ftlit plot`` saves as a PNG file and ``ftlit report`` embeds as PNG bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonargparse import ArgumentParser

from ftlit.commands import fonts
from ftlit.commands.folders import check_target, command_parser, replace_folder, sibling
from ftlit.core.results import DIRECTIONS, FORMAT, RESULTS
from ftlit.errors import ConfigError, report_errors
from ftlit.run_folder import check_folder

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Row = dict[str, float]

# Which way is better, by a word of the metric's name (split at "/" and "_"): ``val/f1_macro`` -> f1 -> max.
HIGHER_IS_BETTER = {
    "acc", "accuracy", "f1", "pearson", "spearman", "exact", "match", "precision", "recall", "mcc", "auroc", "auc",
    "ap", "r2", "bleu", "rouge", "jaccard", "iou",
}  # fmt: skip
LOWER_IS_BETTER = {"loss", "mse", "mae", "rmse", "error", "perplexity", "ppl", "wer", "cer"}
# Beside the png files, what a plot writes; --overwrite replaces only a folder holding nothing else.
SUMMARY = "summary.json"
# What a run folder holds beside its logs (the writers: ftlit.core; read here without importing torch).
Directions = dict[str, bool | None]
_VERSION = re.compile(r"version_(\d+)")


@dataclass
class Version:
    """One ``version_N/metrics.csv``: its rows in file order, every value a float and ``step`` always present."""

    number: int
    path: Path
    rows: list[Row]

    @property
    def keys(self) -> set[str]:
        return set().union(*self.rows) if self.rows else set()

    @property
    def kind(self) -> str:
        """``fit`` (training rows), ``test`` / ``validate`` (evaluation only), or ``empty``."""
        keys = self.keys
        if any(k.startswith(("train/", "lr-")) for k in keys):
            return "fit"
        if any(k.startswith("test/") for k in keys):
            return "test"
        if any(k.startswith("val/") for k in keys):
            return "validate"
        return "empty"


def plot(
    run: str, out: str | None = None, version: int | None = None, overwrite: bool = False, smoothing: float = 0.9
) -> Path:
    """Plot a run's curves from its metrics.csv files and write its best validation and final test scores.

    Writes ``loss.png`` (train/loss per step, raw and smoothed, with val/loss at each validation), ``metrics.png``
    (one panel per other validation metric, its best point starred), ``lr.png`` (when LearningRateMonitor logged
    ``lr-*`` columns) and ``summary.json``: per validation metric its best value, step and epoch (highest or lowest
    as the run's metric-directions.json says; for older runs, highest for acc, f1, pearson, spearman, exact,
    precision, recall, mcc and lowest for loss, mse; ties go to the earliest step, as ModelCheckpoint keeps it), its
    last value, and the final test metrics.

    Args:
        run: The run folder (``trainer.default_root_dir``), holding ``csv/version_N/metrics.csv``; a CSV logger's
            own folder or one ``version_N`` folder work too.
        out: Folder to write (default ``<run>/plots``). An existing non-empty folder is an error unless ``overwrite``
            is set.
        version: Plot only ``version_N``. Default: all versions, the fit's merged in step order so that a resumed
            run's curves continue; test and validate versions are reported in summary.json.
        overwrite: Replace an existing ``out`` folder, if it holds only plots (png files and summary.json).
        smoothing: Weight of the exponential moving average drawn over train/loss, in [0, 1) (0: no smoothing;
            TensorBoard's debiased average). The raw values are drawn faint beneath it.

    Returns:
        The folder written.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError("smoothing", f"must be in [0, 1), got {smoothing}")
    if version is not None and version < 0:
        raise ConfigError("version", f"must be >= 0, got {version}")
    root = Path(run).expanduser()
    target = check_folder(out, "out") if out is not None else root / "plots"
    logs = read_run(root, version)
    check_out(target, overwrite, ours=lambda p: p.suffix == ".png" or p.name == SUMMARY, what="plots")
    check_matplotlib("ftlit plot")

    summary = summarize(root, logs.versions, logs.rows, logs.superseded, smoothing, logs.directions)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside ``out`` and renamed into place when complete: never a half-written folder.
    tmp = sibling(target, "tmp")
    tmp.mkdir()
    try:
        drawn = []
        for name, draw in (("loss.png", draw_loss), ("metrics.png", draw_metrics), ("lr.png", draw_lr)):
            fig = draw(logs.rows, smoothing, logs.resumes, logs.directions)
            if fig is not None:
                save_png(fig, tmp / name)
                drawn.append(name)
        summary["plots"] = drawn
        (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --- reading ----------------------------------------------------------------------------------------------------


def find_versions(run: Path, only: int | None = None) -> list[Version]:
    """The run's CSV versions in version order (``version_10`` after ``version_9``), read.

    ``run`` may be the run folder (``<run>/csv``), a CSV logger's folder (``version_*`` inside) or one version folder.
    """
    if not run.is_dir():
        raise ConfigError("run", f"'{run}' is not a folder: give a run's trainer.default_root_dir")
    if (run / "metrics.csv").is_file():  # one version folder
        match = _VERSION.fullmatch(run.name)
        files = {int(match.group(1)) if match else 0: run / "metrics.csv"}
    else:
        logs = run / "csv" if (run / "csv").is_dir() else run
        files = {
            int(m.group(1)): p / "metrics.csv"
            for p in logs.iterdir()
            if (m := _VERSION.fullmatch(p.name)) and (p / "metrics.csv").is_file()
        }
    if not files:
        raise ConfigError(
            "run",
            f"no metrics.csv under '{run}' (looked for csv/version_*/metrics.csv): run ftlit fit first, or give its "
            "trainer.default_root_dir",
        )
    if only is not None:
        if only not in files:
            raise ConfigError("version", f"no version_{only} with a metrics.csv under '{run}' (there: {sorted(files)})")
        files = {only: files[only]}
    versions = [Version(n, path, read_metrics(path)) for n, path in sorted(files.items())]
    if not any(v.rows for v in versions):
        raise ConfigError("run", f"the metrics.csv files under '{run}' hold no rows yet: nothing logged so far")
    return versions


def read_metrics(path: Path) -> list[Row]:
    """One Lightning metrics.csv: per row, the keys logged at that step (empty cells dropped) as floats."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames and "step" not in reader.fieldnames:
                raise ConfigError("run", f"'{path}' has no step column: not a Lightning metrics.csv")
            table = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError("run", f"cannot read '{path}': {err}") from None
    rows = []
    for line, record in enumerate(table, start=2):
        row: Row = {}
        for key, value in record.items():
            # None: a short row (a file being written); a key of None: a row longer than the header.
            if key is None or value is None or value == "":
                continue
            try:
                row[key] = float(value)
            except ValueError:
                raise ConfigError("run", f"'{path}' line {line}: {key} is not a number: {value!r}") from None
        if "step" in row:  # a row cut short while the run writes it has no step yet
            rows.append(row)
    return rows


def merge(fit: list[Version]) -> tuple[list[Row], dict[int, int]]:
    """The fit versions' rows in step order, and per version how many rows a later version superseded.

    A resumed fit restarts from its checkpoint's step: rows an earlier version logged from that step on were
    trained away (the run crashed after its last checkpoint), so the later version's rows replace them.
    """
    merged: list[tuple[int, int, int, Row]] = []
    superseded: dict[int, int] = {}
    cutoff = math.inf
    for order, v in reversed(list(enumerate(fit))):
        kept = [(i, r) for i, r in enumerate(v.rows) if _step(r) < cutoff]
        if len(kept) < len(v.rows):
            superseded[v.number] = len(v.rows) - len(kept)
        merged += [(_step(r), order, i, r) for i, r in kept]
        if v.rows:
            cutoff = min(cutoff, min(_step(r) for r in v.rows))
    merged.sort(key=lambda t: t[:3])  # file order within a step: a train row before the validation at that step
    return [t[3] for t in merged], dict(sorted(superseded.items()))


def series(rows: list[Row], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of the rows that logged ``key``."""
    pairs = [(_step(r), r[key]) for r in rows if key in r]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _step(row: Row) -> int:
    return int(row["step"])


@dataclass
class RunLogs:
    """What a run's logs say: its versions, the fit's merged rows, and which way each metric is better."""

    root: Path  # the run folder (trainer.default_root_dir)
    versions: list[Version]
    rows: list[Row]  # the fit versions' rows, merged in step order
    superseded: dict[int, int]  # per fit version, the rows a later (resumed) version replaced
    resumes: list[int]  # the steps where a resumed fit's version starts
    directions: Directions | None  # None: an old run that does not say
    results: dict[str, Any] | None  # test-results.json, when an `ftlit test` wrote one

    @property
    def fit(self) -> list[Version]:
        return [v for v in self.versions if v.kind == "fit"]


def read_run(run: Path, version: int | None = None) -> RunLogs:
    """Read a run (see ``find_versions`` for what ``run`` may be): its versions, merged fit rows and directions."""
    versions = find_versions(run, version)
    fit = [v for v in versions if v.kind == "fit"]
    rows, superseded = merge(fit)
    resumes = [min(_step(r) for r in v.rows) for v in fit[1:] if v.rows]
    root = run_root(run)
    results = read_results(root)
    return RunLogs(root, versions, rows, superseded, resumes, run_directions(root, results), results)


def run_root(run: Path) -> Path:
    """The run folder of a run, CSV logger or version folder (``<run>/csv/version_N``): where the run's files are."""
    if (run / "metrics.csv").is_file():
        run = run.parent
    if (run / "csv").is_dir() or not any(_VERSION.fullmatch(p.name) for p in run.iterdir() if p.is_dir()):
        return run
    return run.parent


def read_json(path: Path) -> Any:
    """A JSON file of the run, or None when it is not there; one that does not parse is an error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError("run", f"cannot read '{path}': {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError("run", f"'{path}' is not valid JSON ({err}): rerun the command that wrote it") from None


def read_results(root: Path) -> dict[str, Any] | None:
    """``<run>/test-results.json`` (the last ``ftlit test``), or None; another format is an error naming the file."""
    path = root / RESULTS
    results = read_json(path)
    if results is None:
        return None
    found = results.get("format") if isinstance(results, dict) else None
    if found != FORMAT:
        raise ConfigError(
            "run",
            f"'{path}' has format {found!r}, and this ftlit reads format {FORMAT}: rerun ftlit test with "
            "this ftlit, or read it with the ftlit that wrote it",
        )
    return results


def run_directions(root: Path, results: dict[str, Any] | None = None) -> Directions | None:
    """Whether higher is better per metric, as the run recorded it: ``metric-directions.json`` first, then the test
    results' ``higher_is_better``; None for an old run that recorded neither (names decide then)."""
    path = root / DIRECTIONS
    found = read_json(path)
    if found is not None and not isinstance(found, dict):
        raise ConfigError("run", f"'{path}' is not a JSON object of metric -> true/false/null: rerun ftlit fit")
    directions: Directions = {}
    for source in (found or {}, (results or {}).get("higher_is_better") or {}):
        for key, higher in source.items():
            if isinstance(higher, bool) or higher is None:
                directions.setdefault(str(key), higher)
    return directions if found is not None or directions else None


# --- numbers ----------------------------------------------------------------------------------------------------


def metric_mode(name: str, directions: Directions | None = None) -> str | None:
    """``max``, ``min`` or None (unknown): the run's own ``directions`` when they name the metric (also under another
    stage: ``test/acc`` tells ``val/acc``; null there is unknown), else a word of the name (``val/f1_macro``: max)."""
    if directions:
        stage, _, metric = name.partition("/")
        names = [name] + ([f"{s}/{metric}" for s in ("val", "test", "train") if s != stage] if metric else [])
        for key in names:
            if key in directions:
                higher = directions[key]
                return None if higher is None else ("max" if higher else "min")
    return guess_mode(name)


def guess_mode(name: str) -> str | None:
    """``max`` or ``min`` when a word of the name says which is better (``val/f1_macro``: max), else None."""
    words = set(re.split(r"[/_\-]", name.lower()))
    if words & LOWER_IS_BETTER:
        return "min"
    if words & HIGHER_IS_BETTER:
        return "max"
    return None


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average; non-finite values pass through and are skipped."""
    out, last, count = [], 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        last, count = last * weight + (1 - weight) * v, count + 1
        out.append(last / (1 - weight**count))
    return out


def best_point(steps: list[int], values: list[float], mode: str | None) -> int | None:
    """Index of the best finite value (the earliest on ties), or None."""
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if mode is None or not finite:
        return None
    sign = 1 if mode == "max" else -1
    return max(finite, key=lambda i: (sign * values[i], -steps[i]))


def _num(value: float) -> float | None:
    """JSON has no NaN or infinity: write null."""
    return value if math.isfinite(value) else None


def val_keys(rows: list[Row]) -> list[str]:
    """The ``val/*`` columns of ``rows``, val/loss first."""
    keys = {k for r in rows for k in r if k.startswith("val/")}
    return sorted(keys, key=lambda k: (k != "val/loss", k.lower()))


def lr_keys(rows: list[Row]) -> list[str]:
    """LearningRateMonitor's learning-rate columns (``lr-AdamW``, ``lr-AdamW/head``), not its momentum or decay."""
    keys = {k for r in rows for k in r if k.startswith("lr-")}
    return sorted(k for k in keys if not k.endswith(("-momentum", "-weight_decay")))


def summarize(
    run: Path,
    versions: list[Version],
    rows: list[Row],
    superseded: dict[int, int],
    smoothing: float,
    directions: Directions | None = None,
) -> dict[str, Any]:
    """summary.json's content: versions, best and last of each val metric, last train loss, final test metrics.

    A metric's best follows the run's ``directions`` (see ``metric_mode``)."""
    summary: dict[str, Any] = {"run": str(run), "versions": []}
    for v in versions:
        entry: dict[str, Any] = {"version": v.number, "kind": v.kind, "rows": len(v.rows)}
        if v.rows:
            entry["first_step"], entry["last_step"] = min(_step(r) for r in v.rows), max(_step(r) for r in v.rows)
        if v.number in superseded:
            entry["superseded_rows"] = superseded[v.number]
        if v.kind in ("test", "validate"):
            entry["metrics"] = _last_values(v.rows, ("test/", "val/"))
        summary["versions"].append(entry)

    summary["val"] = {}
    for key in val_keys(rows):
        steps, values = series(rows, key)
        epochs = [r.get("epoch") for r in rows if key in r]
        mode = metric_mode(key, directions)
        best = best_point(steps, values, mode)
        summary["val"][key] = {
            "mode": mode,
            "best": None if best is None else values[best],
            "step": None if best is None else steps[best],
            "epoch": None if best is None or epochs[best] is None else int(epochs[best]),
            "last": _num(values[-1]),
            "last_step": steps[-1],
            "evaluations": len(values),
        }
    steps, values = series(rows, "train/loss")
    if values:
        summary["train"] = {
            "train/loss": {
                "last": _num(values[-1]),
                "last_smoothed": _num(smooth(values, smoothing)[-1]),
                "last_step": steps[-1],
                "points": len(values),
                "non_finite": sum(not math.isfinite(v) for v in values),
            }
        }
    # The final test: the last version (then row) that logged test/* keys, usually the latest `ftlit test`.
    tested = [v for v in versions if any(k.startswith("test/") for k in v.keys)]
    summary["test"] = (
        {"version": tested[-1].number, "metrics": _last_values(tested[-1].rows, ("test/",))} if tested else None
    )
    return summary


def _last_values(rows: list[Row], prefixes: tuple[str, ...]) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    for r in rows:
        values |= {k: _num(v) for k, v in r.items() if k.startswith(prefixes)}
    return dict(sorted(values.items()))


# --- drawing ----------------------------------------------------------------------------------------------------
# Each draw_* returns a Figure, or None when the rows hold nothing to draw; the caller saves it (save_png, png_bytes).


def new_figure(width: float = 8.0, height: float = 4.5) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot, no display, nothing global to close)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_png(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG file and release its contents."""
    path.write_bytes(png_bytes(fig))


def png_bytes(fig: Any) -> bytes:
    """``fig`` as PNG bytes (no version stamp: same data, same bytes), its contents released. Text with CJK
    characters (label names, run names) is drawn in an installed CJK font, or noted in the figure when there is none
    (``ftlit.commands.fonts``)."""
    buffer = io.BytesIO()
    try:
        with fonts.cjk_figure(fig):
            fig.savefig(buffer, format="png", dpi=120, metadata={"Software": None})
    finally:
        fig.clear()
    return buffer.getvalue()


def plain_text(text: str) -> str:
    """``text`` as matplotlib shows it literally: a ``$`` would start math (and a lone one fail to draw)."""
    return str(text).replace("$", r"\$")


def _mark_resumes(ax: Any, resumes: list[int]) -> None:
    for i, step in enumerate(resumes):
        ax.axvline(step, color="grey", linestyle=":", linewidth=1, label="resumed" if i == 0 else None)


def draw_loss(
    rows: list[Row], smoothing: float, resumes: list[int], directions: Directions | None = None
) -> Figure | None:
    """train/loss per step (faint raw, smoothed line) and val/loss per validation, on the step axis."""
    train_steps, train = series(rows, "train/loss")
    val_steps, val = series(rows, "val/loss")
    if not train and not val:
        return None
    fig = new_figure()
    ax = fig.add_subplot()
    if train:
        ax.plot(train_steps, train, color="C0", alpha=0.25, linewidth=0.8, label="train/loss")
        if smoothing > 0:
            ax.plot(train_steps, smooth(train, smoothing), color="C0", linewidth=1.8, label=f"smoothed ({smoothing})")
    if val:
        ax.plot(val_steps, val, color="C1", marker="o", markersize=4, linewidth=1.5, label="val/loss")
        best = best_point(val_steps, val, metric_mode("val/loss", directions))
        if best is not None:
            ax.plot(val_steps[best], val[best], "*", color="C3", markersize=14, label=f"best val/loss {val[best]:.4g}")
    _mark_resumes(ax, resumes)
    ax.set(xlabel="step", ylabel="loss", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _panels(count: int, title: str) -> tuple[Any, list[Any]]:
    """A figure of ``count`` panels, at most 3 a row (spare ones hidden), titled ``title``."""
    cols = min(3, count)
    grid_rows = math.ceil(count / cols)
    fig = new_figure(width=4.0 * cols + 0.5, height=3.2 * grid_rows + 0.3)
    axes = list(fig.subplots(grid_rows, cols, squeeze=False, sharex=True).flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax in axes[:count]:  # sharex shows the steps on the bottom row only, which may be a hidden spare panel
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title)
    return fig, axes[:count]


def draw_metrics(
    rows: list[Row], smoothing: float, resumes: list[int], directions: Directions | None = None
) -> Figure | None:
    """One panel per validation metric other than val/loss, each with its best point starred."""
    keys = [k for k in val_keys(rows) if k != "val/loss"]
    if not keys:
        return None
    fig, axes = _panels(len(keys), "Validation metrics")
    for ax, key in zip(axes, keys, strict=True):
        steps, values = series(rows, key)
        ax.plot(steps, values, color="C2", marker="o", markersize=4, linewidth=1.5)
        best = best_point(steps, values, metric_mode(key, directions))
        title = key
        if best is not None:
            ax.plot(steps[best], values[best], "*", color="C3", markersize=14)
            title += f"  (best {values[best]:.4g} at step {steps[best]})"
        _mark_resumes(ax, resumes)
        ax.set_title(title, fontsize=10)
        ax.set(xlabel="step", ylabel=key.split("/", 1)[-1])
        ax.grid(alpha=0.3)
    return fig


def unfrozen_steps(rows: list[Row]) -> dict[str, int]:
    """Per learning-rate column, the step where its rate first rose above 0 after being 0 (a group unfrozen)."""
    found = {}
    for key in lr_keys(rows):
        steps, values = series(rows, key)
        first = next((i for i, v in enumerate(values) if v > 0), None)
        if first:  # not None, and not the first value: the group was at 0 before
            found[key] = steps[first]
    return found


def draw_lr(
    rows: list[Row], smoothing: float, resumes: list[int], directions: Directions | None = None
) -> Figure | None:
    """Learning rate per step, one line per parameter group (groups on the same schedule drawn once, named together);
    a group whose rate rises from 0 (unfrozen) gets a dashed line at that step, in its colour."""
    keys = lr_keys(rows)
    if not keys:
        return None
    curves: dict[tuple[tuple[int, ...], tuple[float, ...]], list[str]] = {}
    for key in keys:
        steps, values = series(rows, key)
        curves.setdefault((tuple(steps), tuple(values)), []).append(key)
    unfrozen = unfrozen_steps(rows)
    fig = new_figure()
    ax = fig.add_subplot()
    for (steps, values), names in curves.items():
        label = names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} groups, same values)"
        step = unfrozen.get(names[0])
        if step is not None:
            label += f", unfrozen at step {step}"
        (line,) = ax.plot(steps, values, linewidth=1.5, label=plain_text(label))
        if step is not None:
            ax.axvline(step, color=line.get_color(), linestyle="--", linewidth=1, alpha=0.7)
    _mark_resumes(ax, resumes)
    ax.set(xlabel="step", ylabel="learning rate", title="Learning rate per parameter group")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.grid(alpha=0.3)
    if len(curves) > 8:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8 if len(curves) > 6 else 10)
    return fig


def extra_loss_keys(rows: list[Row]) -> list[str]:
    """The ``train/*`` columns beside train/loss: extra loss terms such as ``train/l2sp``."""
    return sorted({k for r in rows for k in r if k.startswith("train/") and k != "train/loss"})


def draw_terms(
    rows: list[Row], smoothing: float, resumes: list[int], directions: Directions | None = None
) -> Figure | None:
    """One panel per extra training term (``train/l2sp``, ...) per step, raw and smoothed as train/loss."""
    keys = extra_loss_keys(rows)
    if not keys:
        return None
    fig, axes = _panels(len(keys), "Extra training terms")
    for ax, key in zip(axes, keys, strict=True):
        steps, values = series(rows, key)
        ax.plot(steps, values, color="C4", alpha=0.3 if smoothing > 0 else 1.0, linewidth=0.8, label="raw")
        if smoothing > 0:
            ax.plot(steps, smooth(values, smoothing), color="C4", linewidth=1.8, label=f"smoothed ({smoothing})")
            ax.legend(fontsize=8)
        _mark_resumes(ax, resumes)
        ax.set_title(key, fontsize=10)
        ax.set(xlabel="step", ylabel=key.split("/", 1)[-1])
        ax.grid(alpha=0.3)
    return fig


def draw_comparison(runs: list[tuple[str, list[Row], Directions | None]]) -> Figure | None:
    """Runs side by side: one panel per validation metric, one line per run (``(name, rows, directions)``), each
    run's best point starred."""
    keys = sorted({k for _, rows, _ in runs for k in val_keys(rows)}, key=lambda k: (k != "val/loss", k.lower()))
    if not keys:
        return None
    fig, axes = _panels(len(keys), "Validation metrics, runs compared")
    for ax, key in zip(axes, keys, strict=True):
        for i, (name, rows, directions) in enumerate(runs):
            steps, values = series(rows, key)
            if not values:
                continue
            ax.plot(steps, values, color=f"C{i}", marker="o", markersize=3, linewidth=1.5, label=plain_text(name))
            best = best_point(steps, values, metric_mode(key, directions))
            if best is not None:
                ax.plot(steps[best], values[best], "*", color=f"C{i}", markersize=12)
        ax.set_title(key, fontsize=10)
        ax.set(xlabel="step", ylabel=key.split("/", 1)[-1])
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return fig


# --- output folder ----------------------------------------------------------------------------------------------


def check_matplotlib(command: str) -> None:
    """matplotlib (the ``plots`` extra) is there, or a one-line error saying what to install."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("matplotlib", f'not installed, and {command} needs it: pip install "ftlit[plots]"') from None


def check_out(target: Path, overwrite: bool, ours: Callable[[Path], bool], what: str) -> None:
    """Refuse to lose data (see ``folders.check_target``), and replace only a folder whose files are all ``ours``
    (what an earlier run of the command wrote, ``what`` in the message)."""
    if not check_target(target, overwrite):
        return
    foreign = sorted(p.name for p in target.iterdir() if not (p.is_file() and ours(p)))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ConfigError(
            "out", f"'{target}' holds more than {what} ({shown}), which --overwrite would delete: give another folder"
        )


# --- command ----------------------------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    """The ``ftlit plot`` parser: ``plot``'s signature, with ``--overwrite`` as a plain flag."""
    return command_parser(plot, "ftlit plot", flags=("overwrite",))


def describe(folder: Path) -> list[str]:
    """What a plot wrote, as printed lines: the files, each val metric's best, the final test, superseded rows."""
    summary = json.loads((folder / SUMMARY).read_text())
    lines = [f"ftlit: plotted {summary['run']} to {folder}: {', '.join([*summary['plots'], SUMMARY])}"]
    for key, m in summary["val"].items():
        if m["best"] is not None:
            epoch = "" if m["epoch"] is None else f", epoch {m['epoch']}"
            lines.append(f"  best {key} = {m['best']:.4g} at step {m['step']}{epoch} ({m['mode']})")
    if summary["test"]:
        scores = ", ".join(f"{k} = {v:.4g}" for k, v in summary["test"]["metrics"].items() if v is not None)
        lines.append(f"  test (version_{summary['test']['version']}): {scores}")
    for v in summary["versions"]:
        if v.get("superseded_rows"):
            lines.append(f"  version_{v['version']}: {v['superseded_rows']} rows replaced by a later (resumed) version")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ftlit plot``; bad input exits with one line naming the field (exit code 2)."""
    config = report_errors(lambda: build_parser().parse_args(argv))
    folder = report_errors(
        lambda: plot(config.run, config.out, config.version, overwrite=config.overwrite, smoothing=config.smoothing)
    )
    print("\n".join(describe(folder)))
