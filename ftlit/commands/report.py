"""``ftlit report``: one self-contained HTML page of a run, or of several side by side.

Reads what ``ftlit fit`` and ``ftlit test`` leave in a run folder (see ``ftlit.commands.plot``): the CSV logs and the
fit's ``config.yaml``, ``metric-directions.json`` and ``test-results.json``. The curves are ``ftlit plot``'s own
drawing functions; the test figures (confusion matrix, ROC and PR curves, reliability diagram, regression scatter)
are drawn here from the test results. Every image is a PNG embedded as a data URI and the CSS is inline: the page
needs no JavaScript, no network and no other file. Everything read from the run is data, HTML-escaped.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import importlib.util
import io
import json
import math
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jsonargparse import ArgumentParser

from ftlit.commands.folders import arg_docs, command_parser, replace_folder, sibling
from ftlit.commands.fonts import FONT_FAMILY
from ftlit.commands.plot import (
    RunLogs,
    check_matplotlib,
    check_out,
    draw_comparison,
    draw_loss,
    draw_lr,
    draw_metrics,
    draw_terms,
    metric_mode,
    new_figure,
    plain_text,
    png_bytes,
    read_json,
    read_run,
    summarize,
)
from ftlit.core.results import RESULTS, TIMING
from ftlit.errors import ConfigError, report_errors
from ftlit.run_folder import check_folder
from ftlit.search import PLOTS, STUDY_JSON, TRIALS_CSV

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT = "report.html"
# The test figures each kind of task has (from the test results' keys, or the model's class when there are none).
SECTIONS = {
    "single-label": ("confusion", "roc", "pr", "calibration", "per-class", "mistakes"),
    "multi-label": ("roc", "pr", "per-class"),
    "regression": ("regression",),
    "other": ("per-type",),
    "ner": ("per-type", "entity-confusion"),
    "qa": ("answer-length", "answerability"),
}
KINDS = {
    "SequenceClassifier": "single-label",
    "MultiLabelClassifier": "multi-label",
    "SequenceRegressor": "regression",
    "TokenClassifier": "ner",
    "QuestionAnswering": "qa",
}
NO_RESULTS = "no test results: run ftlit test"
# Per-type scores in the metrics (NER: test/f1_PER); these suffixes are averages, not types.
_PER_TYPE = re.compile(r"test/(precision|recall|f1)_(.+)")
_AVERAGES = {"micro", "macro", "weighted", "samples"}
# The font stack renders Chinese label names, texts and mistakes (ftlit.commands.fonts); the page is UTF-8.
CSS = """
body { font-family: FONT_FAMILY; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.6em; }
section { margin-bottom: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; border: 1px solid #eee; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
p.note { color: #666; font-style: italic; }
div.wide { overflow-x: auto; }
""".replace("FONT_FAMILY", FONT_FAMILY)


@dataclass
class Run:
    """One run as the report shows it: its logs, summary, test results and the fit's config."""

    name: str  # as given on the command line
    number: int  # 1-based, for the section ids
    logs: RunLogs
    summary: dict[str, Any]
    config: Path | None  # the fit's config.yaml (the latest fit version's), if any
    task: str | None  # the model's class path
    timing: dict[str, Any]  # timing.json: the fit's and the test's wall-clock time, when the run wrote it
    search: Path | None = None  # the study folder, when the run is the best trial of an `ftlit tune` search

    @property
    def results(self) -> dict[str, Any] | None:
        return self.logs.results

    @property
    def results_path(self) -> Path:
        return self.logs.root / RESULTS

    @property
    def kind(self) -> str:
        """single-label, multi-label, regression or other (NER, QA): which test figures the run has."""
        results = self.results or {}
        if "confusion_matrix" in results or "calibration" in results:
            return "single-label"
        if "scatter" in results:
            return "regression"
        if "entity_confusion" in results:
            return "ner"
        if "by_answer_length" in results:
            return "qa"
        if "per_class" in results or "roc" in results or "pr" in results:
            return "multi-label"
        return KINDS.get((self.task or "").rsplit(".", 1)[-1], "other")

    def test_metrics(self) -> tuple[dict[str, Any], str] | None:
        """The test scores and where they come from: test-results.json, else the last test version's metrics.csv."""
        if self.results is not None:
            return dict(self.results.get("metrics") or {}), RESULTS
        if self.summary["test"]:
            return self.summary["test"]["metrics"], f"csv/version_{self.summary['test']['version']}/metrics.csv"
        return None


def report(
    run: list[str], out: str | None = None, overwrite: bool = False, smoothing: float = 0.9, explain: int = 0
) -> Path:
    """Write one self-contained HTML page (report.html) of a run, or of several runs side by side.

    The page holds the run's header (path, task, checkpoint, test data, library versions), its scores (each
    validation metric's best value with its step and epoch, and every test metric), its curves (loss, validation
    metrics with the best point starred, the learning rate of every parameter group with the steps where a frozen
    group was unfrozen, extra loss terms such as train/l2sp), its test figures (confusion matrix, ROC and
    precision-recall curves, reliability diagram, per-class table; for regression, predicted vs gold and the
    residuals) and the fit's resolved config. Several runs add a table of their scores and their validation curves
    overlaid. Every image is embedded (PNG data URIs) and the CSS inline: no JavaScript, no network, no other file.

    Args:
        run: A run folder (``trainer.default_root_dir``), holding ``csv/version_N/metrics.csv``; give ``--run``
            again to compare runs. The test figures need its ``test-results.json`` (written by ``ftlit test``). A
            study folder of ``ftlit tune`` shows the search (every trial, its plots) and then its best trial.
        out: Folder to write report.html into (default ``<first run>/report``). An existing non-empty folder is an
            error unless ``overwrite`` is set.
        overwrite: Replace an existing ``out`` folder, if it holds only a report (report.html).
        smoothing: Weight of the exponential moving average drawn over the training curves, in [0, 1) (0: no
            smoothing; TensorBoard's debiased average). The raw values are drawn faint beneath it.
        explain: Explain the N most confident test mistakes of a classifier: the token attributions of
            ``ftlit explain`` toward the wrongly predicted label, from the tested checkpoint (needs the ``explain``
            extra, captum). 0: none.

    Returns:
        The report.html written.
    """
    runs_given = [run] if isinstance(run, str) else list(run)
    if not runs_given:
        raise ConfigError("run", "required: pass --run <run folder> (again for each run to compare)")
    if not 0.0 <= smoothing < 1.0:
        raise ConfigError("smoothing", f"must be in [0, 1), got {smoothing}")
    if explain < 0:
        raise ConfigError("explain", f"must be >= 0, got {explain}")
    if explain and importlib.util.find_spec("captum") is None:
        raise ConfigError("explain", "needs captum: pip install 'ftlit[explain]', or drop --explain")
    roots = [Path(r).expanduser() for r in runs_given]
    seen: dict[Path, str] = {}
    for given, root in zip(runs_given, roots, strict=True):
        if not root.exists():
            raise ConfigError("run", f"'{given}' does not exist: give a run folder (trainer.default_root_dir)")
        key = root.resolve()
        if key in seen:
            raise ConfigError("run", f"'{given}' is the same run as '{seen[key]}': give each run once")
        seen[key] = given
    target = check_folder(out, "out") if out is not None else roots[0] / "report"
    runs = [
        load_study(given, root, number, smoothing)
        if (root / STUDY_JSON).is_file()
        else load_run(given, root, number, smoothing)
        for number, (given, root) in enumerate(zip(runs_given, roots, strict=True), 1)
    ]
    check_out(target, overwrite, ours=lambda p: p.name == REPORT, what="a report")
    check_matplotlib("ftlit report")

    page = render(runs, smoothing, explain)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside ``out`` and renamed into place when complete: never a half-written folder.
    tmp = sibling(target, "tmp")
    tmp.mkdir()
    try:
        (tmp / REPORT).write_text(page, encoding="utf-8")
        replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target / REPORT


# --- reading ----------------------------------------------------------------------------------------------------


def load_run(name: str, root: Path, number: int, smoothing: float) -> Run:
    """Read one run: its logs (an error when there are none), test results, config and task."""
    logs = read_run(root)
    summary = summarize(logs.root, logs.versions, logs.rows, logs.superseded, smoothing, logs.directions)
    config = next(
        (
            v.path.parent / "config.yaml"
            for v in reversed(logs.fit or logs.versions)
            if (v.path.parent / "config.yaml").is_file()
        ),
        None,
    )
    if logs.results is not None:
        _check_results(logs.results, logs.root / RESULTS)
    task = (logs.results or {}).get("task") or (_config_task(config) if config else None)
    timing = read_json(logs.root / TIMING)
    timing = timing if isinstance(timing, dict) else {}
    return Run(name, number, logs, summary, config, None if task is None else str(task), timing)


def load_study(name: str, root: Path, number: int, smoothing: float) -> Run:
    """A study folder of ``ftlit tune``: its best trial's run, with the search shown first."""
    study = read_json(root / STUDY_JSON)
    best = study.get("best") if isinstance(study, dict) else None
    if not isinstance(best, dict):
        raise ConfigError("run", f"'{name}' is a search with no finished trial yet: run ftlit tune until one ends")
    with _reading(root / STUDY_JSON, "best.folder"):
        folder = root / "trials" / str(int(best["folder"]))  # a number: data, never a path from the file
    run = load_run(name, folder, number, smoothing)
    run.search = root
    return run


def _check_results(results: dict[str, Any], path: Path) -> None:
    """The keys every test result has, of the right type (the figures' keys are checked where they are drawn)."""
    with _reading(path, "metrics"):
        metrics = results.get("metrics")
        if not isinstance(metrics, dict):
            raise TypeError(f"expected an object of metric -> number, got {type(metrics).__name__}")
        for key, value in metrics.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise TypeError(f"{key} is {value!r}, not a number")
    with _reading(path, "labels"):
        if results.get("labels") is not None and not isinstance(results["labels"], list):
            raise TypeError(f"expected a list of label names or null, got {type(results['labels']).__name__}")


def _config_task(path: Path) -> str | None:
    """The model's class_path in a LightningCLI config.yaml, or None when the file does not say."""
    import yaml  # jsonargparse depends on PyYAML

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
        task = config["model"]["class_path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return task if isinstance(task, str) else None


@contextlib.contextmanager
def _reading(path: Path, key: str) -> Iterator[None]:
    """A test-results entry of the wrong shape is an error naming the file and the key, not a traceback."""
    try:
        yield
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise ConfigError("run", f"'{path}': {key} is malformed ({err}): rerun ftlit test to rewrite it") from None


def _floats(values: Any) -> list[float]:
    """A list of JSON numbers as floats; null (a non-finite value when written) becomes NaN."""
    if not isinstance(values, list):
        raise TypeError(f"expected a list, got {type(values).__name__}")
    return [math.nan if v is None else float(v) for v in values]


# --- HTML -------------------------------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Text from a file, safe in HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number as a table shows it: 4 significant digits, integers whole, a missing value as a dash."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def cell(value: Any) -> str:
    """A table cell: numbers right-aligned, with their exact value in ``data-value``."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        exact = json.dumps(value)
        return f'<td class="num" data-value="{esc(exact)}">{esc(fmt(value))}</td>'
    return f"<td>{esc(value)}</td>"


def table(kind: str, header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table (``data-table`` names it) with ``header`` and the cells of ``rows``, every text escaped."""
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in header)
    body = "\n".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return (
        f'<div class="wide"><table data-table="{esc(kind)}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n'
        "</tbody>\n</table></div>"
    )


def image(fig: Figure | None, alt: str) -> str:
    """``fig`` as an embedded PNG (``<img src="data:image/png;base64,...">``); empty when there is no figure."""
    if fig is None:
        return ""
    data = base64.b64encode(png_bytes(fig)).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def section(kind: str, number: int, title: str, body: str) -> str:
    """A section with a stable id: ``kind`` for the first run, ``kind-N`` for run N (ids are unique in a page)."""
    ident = kind if number == 1 else f"{kind}-{number}"
    return f'<section id="{ident}" data-section="{kind}">\n<h3>{esc(title)}</h3>\n{body}\n</section>'


def render(runs: list[Run], smoothing: float, explain: int = 0) -> str:
    """The whole page; ``explain``: how many mistakes of each run to explain."""
    names = _short_names(runs)
    # The test sections first: malformed test results stop the report before the curves are drawn.
    tests = [[results_section(run, kind, explain) for kind in SECTIONS[run.kind]] for run in runs]
    parts = []
    if len(runs) > 1:
        parts.append(comparison(runs, names))
    for run, sections in zip(runs, tests, strict=True):
        parts.append(render_run(run, smoothing, heading=len(runs) > 1, tests=sections))
    title = "ftlit report: " + ", ".join(names)
    nav = ""
    if len(runs) > 1:
        links = "".join(f'<li><a href="#run-{r.number}">run {r.number}: {esc(r.name)}</a></li>' for r in runs)
        nav = f'<nav><ul><li><a href="#comparison">comparison</a></li>{links}</ul></nav>'
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="icon" href="data:,">\n<title>{esc(title)}</title>\n<style>{CSS}{_words_style(explain)}</style>\n'
        "</head>\n<body>\n"
        f"<h1>{esc(title)}</h1>\n{nav}\n{body}\n</body>\n</html>\n"
    )


def _short_names(runs: list[Run]) -> list[str]:
    """Each run's folder name, or the path as given where two runs share a folder name."""
    names = [r.logs.root.resolve().name or r.name for r in runs]
    return names if len(set(names)) == len(names) else [r.name for r in runs]


def comparison(runs: list[Run], names: list[str]) -> str:
    """Several runs: one table (a row per run, a column per best val metric and per test metric), curves overlaid."""
    val = sorted({k for r in runs for k in r.summary["val"]}, key=lambda k: (k != "val/loss", k.lower()))
    tests = [r.test_metrics() for r in runs]
    test = sorted({k for t in tests if t for k in t[0]}, key=lambda k: (k != "test/loss", k.lower()))
    rows = []
    for run, name, scores in zip(runs, names, tests, strict=True):
        best = [run.summary["val"].get(k, {}).get("best") for k in val]
        fit = run.timing.get("fit")
        seconds = fit.get("seconds") if isinstance(fit, dict) else None
        rows.append([f"{run.number}: {name}", *best, *[(scores[0] if scores else {}).get(k) for k in test], seconds])
    header = ["run", *[f"best {k}" for k in val], *test, "fit time (s)"]
    body = table("comparison", header, rows)
    body += note("Best validation values as each run's metric directions say; test values from each run's last test.")
    fig = draw_comparison(
        [(f"{r.number}: {n}", r.logs.rows, r.logs.directions) for r, n in zip(runs, names, strict=True)]
    )
    body += image(fig, "validation metrics of every run, overlaid") or note("no validation metrics in any run")
    return section("comparison", 1, "Runs compared", body)


def render_run(run: Run, smoothing: float, heading: bool, tests: list[str]) -> str:
    """One run's sections, in order (``tests``: its test sections, drawn already); a section whose data is missing
    says so in a short note."""
    n, logs = run.number, run.logs
    parts = [header(run), search_section(run), scores(run)]

    fit_note = "no training rows in metrics.csv: run ftlit fit"
    curves = image(draw_loss(logs.rows, smoothing, logs.resumes, logs.directions), "loss per step")
    curves += image(draw_metrics(logs.rows, smoothing, logs.resumes, logs.directions), "validation metrics per step")
    parts.append(section("curves", n, "Learning curves", curves or note(fit_note)))
    lr = image(draw_lr(logs.rows, smoothing, logs.resumes, logs.directions), "learning rate per parameter group")
    lr_note = "no learning rates logged: add lightning.pytorch.callbacks.LearningRateMonitor to trainer.callbacks"
    parts.append(section("learning-rates", n, "Learning rates", lr or note(lr_note)))
    terms = image(draw_terms(logs.rows, smoothing, logs.resumes, logs.directions), "extra training terms per step")
    terms_note = "no extra loss terms logged (train/l2sp appears with model.l2sp_alpha > 0)"
    parts.append(section("extra-losses", n, "Extra loss terms", terms or note(terms_note)))

    parts += tests
    parts.append(config_section(run))
    title = f'<h2 id="run-{n}">run {n}: {esc(run.name)}</h2>\n' if heading else ""
    return f'<article data-run="{n}">\n{title}' + "\n".join(p for p in parts if p) + "\n</article>"


def search_section(run: Run) -> str:
    """The search this run won (``ftlit tune``): every trial, the optimisation history, the parameter importances."""
    if run.search is None:
        return ""
    study = read_json(run.search / STUDY_JSON)
    try:
        rows = list(csv.reader(io.StringIO((run.search / TRIALS_CSV).read_text(encoding="utf-8"))))
    except FileNotFoundError:
        rows = []
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError("run", f"cannot read '{run.search / TRIALS_CSV}': {err}: run ftlit tune again") from None
    counts = ", ".join(f"{n} {state}" for state, n in (study.get("trials") or {}).items() if n)
    best = study["best"]
    text = (
        f"Study {study.get('study')}: {study.get('metric')} ({study.get('direction')}); {counts}. This report is of "
        f"the best trial, {best.get('number')} ({study.get('metric')} {fmt(best.get('value'))}), below."
    )
    body = note(text)
    if rows:
        body += table("trials", rows[0], [[_number_or_text(v) for v in row] for row in rows[1:]])
    for name in PLOTS:
        body += embedded_png(run.search / name, f"search: {name.removesuffix('.png')}")
    return section("search", run.number, "Hyperparameter search", body)


def _number_or_text(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def embedded_png(path: Path, alt: str) -> str:
    """A PNG file as an embedded image; nothing when the file is missing or is not a PNG."""
    data = path.read_bytes() if path.is_file() else b""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return ""
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}" alt="{esc(alt)}">'


def header(run: Run) -> str:
    """Where the run is, what was tested on what, and with which versions."""
    results = run.results or {}
    items: list[tuple[str, Any]] = [("run", run.name), ("task", run.task or "unknown (no test results or config)")]
    if results:
        items.append(("checkpoint", results.get("ckpt_path", "–")))
        items.append(("test data", _data_text(results.get("data"))))
        labels = results.get("labels")
        if isinstance(labels, list):
            shown = ", ".join(map(str, labels[:30])) + (f", ... ({len(labels)} in all)" if len(labels) > 30 else "")
            items.append(("labels", shown))
        items.append(("tested", results.get("created", "–")))
        versions = results.get("versions")
        if isinstance(versions, dict):
            items.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    else:
        items.append(("test", NO_RESULTS))
    logs = []
    for v in run.summary["versions"]:
        steps = f", steps {v['first_step']}–{v['last_step']}" if "first_step" in v else ""
        replaced = f", {v['superseded_rows']} rows replaced by a resumed version" if v.get("superseded_rows") else ""
        logs.append(f"version_{v['version']} ({v['kind']}{steps}{replaced})")
    items.append(("logs", "; ".join(logs)))
    items += [(f"{stage} time", _time_text(run.timing.get(stage))) for stage in ("fit", "test")]
    source = "from the run" if run.logs.directions is not None else "guessed from the metric names (an older run)"
    items.append(("which way is better", source))
    rows = "\n".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in items)
    return section("header", run.number, "Run", f'<table data-table="header">\n{rows}\n</table>')


def _time_text(entry: Any) -> str:
    """A stage's wall-clock time from timing.json: seconds, steps (fit) and processes."""
    with contextlib.suppress(TypeError, ValueError, KeyError):
        seconds = float(entry["seconds"])
        processes = int(entry.get("processes", 1))
        text = f"{seconds:.1f} s"
        if entry.get("steps"):
            text += f" for {int(entry['steps'])} steps ({seconds / int(entry['steps']):.3g} s/step)"
        if entry.get("batches_per_process"):
            text += f" for {int(entry['batches_per_process'])} batches per process"
        text += f" on {processes} process{'es' if processes != 1 else ''}"
        return text + (f", finished {entry['finished']}" if entry.get("finished") else "")
    return f"– (no {TIMING} entry: runs of this ftlit write one)"


def _data_text(data: Any) -> str:
    if not isinstance(data, dict):
        return "–" if data is None else str(data)
    rows = f" ({data['rows']} rows)" if "rows" in data else ""
    if "file" in data:
        return f"{data['file']}{rows}"
    if "dataset" in data:
        where = " / ".join(str(data[k]) for k in ("dataset", "config", "split") if data.get(k) is not None)
        return f"{where}{rows}"
    return ", ".join(f"{k}: {v}" for k, v in data.items())


def _better(mode: str | None) -> str:
    return {"max": "higher", "min": "lower"}.get(mode or "", "unknown")


def scores(run: Run) -> str:
    """Each val metric's best (step, epoch) and last value; every test metric."""
    val = [
        [key, _better(m["mode"]), m["best"], m["step"], m["epoch"], m["last"], m["evaluations"]]
        for key, m in run.summary["val"].items()
    ]
    body = "<h4>Best validation scores</h4>\n"
    if val:
        body += table("val-scores", ["metric", "better", "best", "step", "epoch", "last", "evaluations"], val)
    else:
        body += note("no validation metrics in metrics.csv")
    body += "\n<h4>Test scores</h4>\n"
    found = run.test_metrics()
    if found is None:
        body += note(NO_RESULTS)
    else:
        metrics, source = found
        directions = run.logs.directions
        with _reading(run.results_path, "metrics"):
            rows = [[k, v, _better(metric_mode(k, directions))] for k, v in sorted(metrics.items())]
        body += table("test-scores", ["metric", "value", "better"], rows)
        body += note(
            f"from {source}" + ("" if run.results is not None else f"; the test figures need {RESULTS}: {NO_RESULTS}")
        )
    return section("scores", run.number, "Scores", body)


def results_section(run: Run, kind: str, explain: int = 0) -> str:
    """One test figure or table, or a note when the test results do not hold it."""
    title = {
        "confusion": "Confusion matrix",
        "roc": "ROC curves",
        "pr": "Precision-recall curves",
        "calibration": "Reliability diagram",
        "per-class": "Per-class scores",
        "per-type": "Per-type scores",
        "regression": "Predicted vs gold",
        "mistakes": "Most confident mistakes",
        "entity-confusion": "Confused entity types",
        "answer-length": "Exact match and F1 by answer length",
        "answerability": "Has answer / no answer",
    }[kind]
    results = run.results
    if results is None:
        if kind == "per-type":
            return ""  # NER and QA: the scores table says it
        return section(kind, run.number, title, note(NO_RESULTS))
    key = {
        "confusion": "confusion_matrix",
        "per-class": "per_class",
        "regression": "scatter",
        "entity-confusion": "entity_confusion",
        "answer-length": "by_answer_length",
        "answerability": "by_answerability",
    }.get(kind, kind)
    with _reading(run.results_path, key):
        if kind == "per-type":
            if isinstance(results.get("per_type"), list):
                return section(kind, run.number, title, per_class(results["per_type"], "type"))
            body = per_type(results.get("metrics") or {})
            return section(kind, run.number, title, body) if body else ""
        if results.get(key) is None:
            return section(kind, run.number, title, note(f"not in {RESULTS}: rerun ftlit test with this ftlit"))
        labels = results.get("labels")
        if kind == "confusion":
            names = labels if isinstance(labels, list) else list(range(len(results[key])))
            body = image(draw_confusion(results[key], [str(x) for x in names]), "confusion matrix")
        elif kind == "roc":
            body = image(draw_roc(results[key]), "ROC curve per class")
        elif kind == "pr":
            body = image(draw_pr(results[key]), "precision-recall curve per class")
        elif kind == "calibration":
            body = image(draw_calibration(results[key]), "reliability diagram")
        elif kind == "per-class":
            body = per_class(results[key])
        elif kind == "mistakes":
            body = mistakes_table(results[key]) + (explained_mistakes(results, explain) if explain else "")
        elif kind == "entity-confusion":
            confusion = results[key]
            names = [*map(str, confusion["types"]), "no entity"]
            body = image(draw_confusion(confusion["counts"], names), "confused entity types")
        elif kind == "answer-length":
            groups = results[key]
            body = image(draw_answer_lengths(groups), "exact match and F1 by answer length")
            body += question_groups(groups, "answer_words", "answer words")
        elif kind == "answerability":
            body = question_groups(results[key], "group", "questions")
            if not results[key]:
                body = note("no questions in the test split")
        else:
            data = results.get("data")
            rows = data.get("rows") if isinstance(data, dict) else None
            body = image(draw_regression(results[key], results.get("residuals"), rows), "predicted vs gold, residuals")
    return section(kind, run.number, title, body)


def per_class(entries: list[dict[str, Any]], name: str = "label") -> str:
    """The per-class (or per-type: ``name``) table: precision, recall, F1, support (and any other numbers)."""
    first = [name, "precision", "recall", "f1", "support"]
    keys = first[1:] + sorted({k for e in entries for k in e} - set(first))
    rows = [[str(e[name]), *[e.get(k) for k in keys]] for e in entries]
    return table("per-class" if name == "label" else f"per-{name}", [name, *keys], rows)


def question_groups(groups: list[dict[str, Any]], key: str, name: str) -> str:
    """QA's exact match and F1 (percent) per group of test questions."""
    rows = [[str(g[key]), g["questions"], g["exact"], g["f1"]] for g in groups]
    return table(f"qa-{key.replace('_', '-')}", [name, "questions", "exact match (%)", "F1 (%)"], rows)


def mistakes_table(entries: list[dict[str, Any]]) -> str:
    """The test's most confident wrong predictions: text, gold and predicted label, confidence, row in the split."""
    if not entries:
        return note("no mistakes on the test split")
    rows = [[str(e["text"]), str(e["gold"]), str(e["predicted"]), e.get("confidence"), e.get("row")] for e in entries]
    return table("mistakes", ["text", "gold", "predicted", "confidence", "row"], rows)


def explained_mistakes(results: dict[str, Any], n: int) -> str:
    """Token attributions (``ftlit explain``) of the ``n`` most confident mistakes, toward the predicted label."""
    entries = results["mistakes"][:n]
    ckpt = results.get("ckpt_path")
    if not entries:
        return ""
    if not isinstance(ckpt, str) or not Path(ckpt).is_file():
        return note(f"cannot explain the mistakes: the tested checkpoint {ckpt} is not there")
    from ftlit.commands.explain import explain, render_entries  # torch and captum: only when asked

    pairs = [e.get("text_pair") for e in entries]
    explained = explain(ckpt, [str(e["text"]) for e in entries], pairs if any(pairs) else None)
    return (
        f"<h4>Why: token attributions of the {len(entries)} most confident mistakes</h4>\n{render_entries(explained)}"
    )


def _words_style(explain: int) -> str:
    """The explanations' word colours, when the page holds any."""
    if not explain:
        return ""
    from ftlit.commands.explain import WORDS_STYLE

    return WORDS_STYLE


def per_type(metrics: dict[str, Any]) -> str:
    """NER's per-type scores (``test/f1_PER``, ...) as a table, or nothing when the metrics have none."""
    found: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        match = _PER_TYPE.fullmatch(key)
        if match and match.group(2) not in _AVERAGES:
            found.setdefault(match.group(2), {})[match.group(1)] = value
    if not any("f1" in scores for scores in found.values()):
        return ""
    rows = [[t, s.get("precision"), s.get("recall"), s.get("f1")] for t, s in sorted(found.items())]
    return table("per-type", ["type", "precision", "recall", "f1"], rows)


def config_section(run: Run) -> str:
    if run.config is None:
        return section(
            "config", run.number, "Resolved config", note("no config.yaml in the run's csv/version_N folders")
        )
    text = run.config.read_text(encoding="utf-8", errors="replace")
    where = run.config.relative_to(run.logs.root) if run.config.is_relative_to(run.logs.root) else run.config
    body = f"<p>{esc(where)}</p>\n<pre>{esc(text)}</pre>"
    return section("config", run.number, "Resolved config", body)


# --- test figures -----------------------------------------------------------------------------------------------


def _legend(ax: Any, count: int, loc: str) -> None:
    if count > 12:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=8 if count > 6 else 9, loc=loc)


def _ticks(ax: Any, labels: list[str]) -> None:
    """Label names on both axes of a matrix, slanted when long or many."""
    shown = [plain_text(x if len(x) <= 24 else x[:23] + "…") for x in labels]
    slant = len(labels) > 4 or max(map(len, shown), default=0) > 8
    ticks = list(range(len(labels)))
    ax.set_xticks(ticks, shown, rotation=45 if slant else 0, ha="right" if slant else "center", rotation_mode="anchor")
    ax.set_yticks(ticks, shown)


def draw_confusion(matrix: list[list[float]], labels: list[str]) -> Figure:
    """Two panels: counts, and rows normalised to 1 (each gold label's recall on the diagonal); label names on the
    axes, gold down, predicted across."""
    import numpy as np

    counts = np.array([_floats(row) for row in matrix], dtype=float)
    n = len(labels)
    if counts.shape != (n, n):
        raise ValueError(f"a {counts.shape} matrix for {n} labels")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    side = min(max(4.0, 0.45 * n + 2.5), 12.0)
    fig = new_figure(width=2 * side + 1.0, height=side)
    panels = (
        (counts, "Counts", lambda v: f"{v:.0f}", None),
        (share, "Row-normalised (share of each gold label)", lambda v: f"{v:.0%}", 1.0),
    )
    for ax, (data, title, text, top) in zip(fig.subplots(1, 2), panels, strict=True):
        shown = ax.imshow(data, cmap="Blues", vmin=0, vmax=top)
        _ticks(ax, labels)
        ax.set(xlabel="predicted label", ylabel="gold label", title=title)
        if n <= 25:
            high = (top or (np.nanmax(data) if data.size else 1.0)) / 2
            for (i, j), value in np.ndenumerate(data):
                colour = "white" if value > high else "black"
                ax.text(j, i, text(value), ha="center", va="center", color=colour, fontsize=9 if n <= 10 else 7)
        fig.colorbar(shown, ax=ax, shrink=0.8, label="examples" if top is None else "share of the gold label")
    fig.suptitle(f"Confusion matrix ({int(np.nansum(counts))} test examples)")
    return fig


def _curves(
    curves: dict[str, dict[str, Any]], x: str, y: str, area: str, name: str, xlabel: str, ylabel: str, title: str
) -> Figure:
    fig = new_figure(width=7.5, height=6.0)
    ax = fig.add_subplot()
    for label, curve in curves.items():
        value = curve.get(area)
        ax.plot(_floats(curve[x]), _floats(curve[y]), linewidth=1.5, label=plain_text(f"{label} ({name} {fmt(value)})"))
    if x == "fpr":
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    _legend(ax, len(curves) + (x == "fpr"), "lower right" if x == "fpr" else "lower left")
    return fig


def draw_roc(roc: dict[str, dict[str, Any]]) -> Figure:
    """One ROC curve per class (that class against the rest), its area under the curve in the legend."""
    return _curves(
        roc, "fpr", "tpr", "auc", "AUC", "false positive rate", "true positive rate", "ROC curves (each class vs rest)"
    )


def draw_pr(pr: dict[str, dict[str, Any]]) -> Figure:
    """One precision-recall curve per class, its average precision in the legend."""
    return _curves(pr, "recall", "precision", "ap", "AP", "recall", "precision", "Precision-recall curves (each class)")


def draw_calibration(calibration: dict[str, Any]) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, ECE in the title; beside it, how many
    predictions fall in each bin."""
    from matplotlib.ticker import MaxNLocator

    lower, upper = _floats(calibration["lower"]), _floats(calibration["upper"])
    count, accuracy = _floats(calibration["count"]), _floats(calibration["accuracy"])
    confidence = _floats(calibration["confidence"])
    if not len(lower) == len(upper) == len(count) == len(accuracy) == len(confidence):
        raise ValueError("lower, upper, count, confidence and accuracy differ in length")
    kept = [i for i in range(len(lower)) if count[i] > 0 and math.isfinite(accuracy[i])]
    widths = [u - lo for lo, u in zip(lower, upper, strict=True)]
    fig = new_figure(width=11.0, height=4.8)
    reliability, histogram = fig.subplots(1, 2)
    reliability.bar(
        [lower[i] for i in kept], [accuracy[i] for i in kept], width=[widths[i] for i in kept], align="edge",
        color="C0", alpha=0.75, edgecolor="black", linewidth=0.6, label="accuracy in the bin",
    )  # fmt: skip
    reliability.plot(
        [confidence[i] for i in kept], [accuracy[i] for i in kept], "o", color="C3", markersize=4,
        label="at the bin's mean confidence",
    )  # fmt: skip
    reliability.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    ece = calibration.get("ece")
    reliability.set(
        xlabel="confidence",
        ylabel="accuracy",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"Reliability diagram (ECE {fmt(ece)})",
    )
    reliability.grid(alpha=0.3)
    reliability.legend(fontsize=8, loc="upper left")
    histogram.bar(lower, count, width=widths, align="edge", color="C1", edgecolor="black", linewidth=0.6)
    histogram.set(xlabel="confidence", ylabel="predictions", xlim=(0, 1), title="Predictions per confidence bin")
    histogram.yaxis.set_major_locator(MaxNLocator(integer=True))
    histogram.grid(alpha=0.3)
    return fig


def draw_answer_lengths(groups: list[dict[str, Any]]) -> Figure | None:
    """Bars of exact match and F1 per gold answer length, each group's number of questions under it."""
    if not groups:
        return None
    fig = new_figure(width=max(5.0, 0.9 * len(groups) + 2), height=3.6)
    ax = fig.add_subplot()
    x = list(range(len(groups)))
    ax.bar([i - 0.2 for i in x], _floats([g["exact"] for g in groups]), width=0.4, label="exact match")
    ax.bar([i + 0.2 for i in x], _floats([g["f1"] for g in groups]), width=0.4, label="F1")
    ax.set_xticks(x, [f"{g['answer_words']}\n(n={g['questions']})" for g in groups])
    ax.set(
        xlabel="gold answer length (words; n: questions)",
        ylabel="score (%)",
        ylim=(0, 118),
        title="Test scores by answer length",
    )
    ax.legend(loc="upper right", ncols=2)
    return fig


def draw_regression(scatter: dict[str, Any], residuals: dict[str, Any] | None, rows: int | None = None) -> Figure:
    """Predicted against gold with the line y = x, and a histogram of the residuals (predicted - gold); ``rows``: the
    test split's size, when the results hold a sample of it."""
    gold, predicted = _floats(scatter["gold"]), _floats(scatter["predicted"])
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold and {len(predicted)} predicted values")
    pairs = [(g, p) for g, p in zip(gold, predicted, strict=True) if math.isfinite(g) and math.isfinite(p)]
    fig = new_figure(width=11.0, height=5.0)
    points, spread = fig.subplots(1, 2)
    points.scatter([g for g, _ in pairs], [p for _, p in pairs], s=12, alpha=0.6, color="C0", edgecolors="none")
    if pairs:
        low = min(min(g, p) for g, p in pairs)
        high = max(max(g, p) for g, p in pairs)
        points.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1, label="y = x")
        points.legend(fontsize=9, loc="upper left")
    shown = f"{len(pairs)} of {rows}" if isinstance(rows, int) and rows > len(pairs) else f"{len(pairs)}"
    points.set(xlabel="gold", ylabel="predicted", title=f"Predicted vs gold ({shown} test examples)")
    points.grid(alpha=0.3)
    errors = [p - g for g, p in pairs]
    spread.hist(errors, bins=max(10, min(50, int(math.sqrt(len(errors)) * 2) or 10)), color="C1", edgecolor="white")
    spread.axvline(0, color="grey", linestyle="--", linewidth=1)
    stats = residuals if isinstance(residuals, dict) else {}
    mean = stats.get("mean", sum(errors) / len(errors) if errors else None)
    std = stats.get("std")
    if std is None and errors:
        std = math.sqrt(sum((e - sum(errors) / len(errors)) ** 2 for e in errors) / len(errors))
    spread.set(
        xlabel="residual (predicted − gold)",
        ylabel="examples",
        title=f"Residuals: mean {fmt(mean)}, std {fmt(std)}",
    )
    spread.grid(alpha=0.3)
    return fig


# --- command ----------------------------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    """The ``ftlit report`` parser: ``report``'s signature, with ``--run`` repeatable and ``--overwrite`` a flag."""
    parser = command_parser(report, "ftlit report", flags=("overwrite",), skip=("run",))
    # Repeatable (--run a --run b), which a list-typed argument is not.
    help_ = arg_docs(report)["run"]
    parser.add_argument("--run", action="append", required=True, type=str, metavar="RUN", help=help_)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``ftlit report``; bad input exits with one line naming the field (exit code 2)."""
    config = report_errors(lambda: build_parser().parse_args(argv))
    page = report_errors(
        lambda: report(
            config.run, config.out, overwrite=config.overwrite, smoothing=config.smoothing, explain=config.explain
        )
    )
    print(f"ftlit: report of {', '.join(config.run)}: {page}")
