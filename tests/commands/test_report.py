"""`ftlit report`: one self-contained HTML page of a run's scores, curves and test figures, several runs compared."""

from __future__ import annotations

import base64
import functools
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers.browser import browser_missing, chromium
from lightning.pytorch.loggers import CSVLogger

from conftest import command_error
from ftlit import cli
from ftlit.commands.plot import find_versions, merge, unfrozen_steps
from ftlit.commands.report import REPORT, main, report
from ftlit.core.results import DIRECTIONS, RESULTS, TIMING

pytest.importorskip("matplotlib")  # the `plots` extra

LABEL = "<b>pos</b>"  # a label that is HTML: shown as text, never as markup
PNG = b"\x89PNG\r\n\x1a\n"
# Validation at the end of each epoch of 10 steps: val/acc peaks at step 19; val/brier (a name no rule knows, lower
# is better only because metric-directions.json says so) is lowest at step 29.
VAL = {9: (0.70, 0.60, 0.30), 19: (0.90, 0.40, 0.20), 29: (0.85, 0.45, 0.10)}
UNFREEZE = 10  # layer_1's learning rate is 0 before this step (frozen), then rises
TEST_CSV = {"test/acc": 0.9, "test/f1": 0.89, "test/loss": 0.41}
CONFIG = """seed_everything: 42
model:
  class_path: ftlit.tasks.text.SequenceClassifier
  init_args:
    backbone: models/tiny
    l2sp_alpha: 0.01
data:
  class_path: ftlit.tasks.text.ClassificationDataModule
  init_args:
    text_column: "<script>alert('x')</script>"
"""


def log_version(root: Path, version: int, rows: list[tuple[int, dict[str, float]]], config: str | None = None) -> None:
    """``csv/version_<version>/metrics.csv`` written by Lightning's own CSVLogger, as a run writes it."""
    logger = CSVLogger(save_dir=str(root), name="csv", version=version)
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()
    if config is not None:
        (Path(logger.log_dir) / "config.yaml").write_text(config)


def fit_rows(shift: float = 0.0, val: dict = VAL) -> list[tuple[int, dict[str, float]]]:
    """30 steps of a fit: two learning-rate groups (layer_1 frozen at first), train/loss and train/l2sp, validation."""
    rows = []
    for step in range(30):
        epoch = float(step // 10)
        layer = 0.0 if step < UNFREEZE else 5e-4 * (1 - step / 30)
        rows.append((step, {"lr-AdamW/head": 1e-3 * (1 - step / 30), "lr-AdamW/layer_1": layer}))
        loss = 1.0 / (1 + step) + 0.05 * (step % 2) + shift
        rows.append((step, {"train/loss": loss, "train/l2sp": 0.01 * (30 - step), "epoch": epoch}))
        if step in val:
            acc, vloss, brier = val[step]
            metrics = {"val/acc": acc + shift, "val/f1": acc - 0.1, "val/loss": vloss, "val/brier": brier}
            rows.append((step, {**metrics, "epoch": epoch}))
    return rows


def classification_results() -> dict:
    """A binary classifier's test-results.json, as `ftlit test` writes it (format 1)."""
    return {
        "format": 1,
        "created": "2026-12-02T03:10:00+00:00",
        "task": "ftlit.tasks.text.SequenceClassifier",
        "ckpt_path": "/abs/run/checkpoints/last.ckpt",
        "data": {"file": "/abs/test.jsonl", "rows": 30},
        "labels": ["neg", LABEL],
        "metrics": {
            "test/loss": 0.41,
            "test/acc": 0.8667,
            "test/f1": 0.8661,
            "test/auroc": 0.95,
            "test/ap": 0.94,
            "test/ece": 0.05,
            "test/f1_neg": 0.8571,
            f"test/f1_{LABEL}": 0.875,
        },  # fmt: skip
        "higher_is_better": {"test/loss": False, "test/acc": True, "test/f1": True, "test/ece": False},
        "confusion_matrix": [[12, 3], [1, 14]],
        "per_class": [
            {"label": "neg", "precision": 0.9231, "recall": 0.8, "f1": 0.8571, "support": 15},
            {"label": LABEL, "precision": 0.8235, "recall": 0.9333, "f1": 0.875, "support": 15},
        ],
        "roc": {
            "neg": {"fpr": [0.0, 0.0667, 0.2, 1.0], "tpr": [0.0, 0.6, 0.9333, 1.0], "auc": 0.95},
            LABEL: {"fpr": [0.0, 0.0667, 0.4, 1.0], "tpr": [0.0, 0.8, 0.9333, 1.0], "auc": 0.95},
        },
        "pr": {
            "neg": {"precision": [1.0, 0.9231, 0.5], "recall": [0.0, 0.8, 1.0], "ap": 0.94},
            LABEL: {"precision": [1.0, 0.8235, 0.5], "recall": [0.0, 0.9333, 1.0], "ap": 0.93},
        },
        "calibration": {
            "bins": 5,
            "lower": [0.0, 0.2, 0.4, 0.6, 0.8],
            "upper": [0.2, 0.4, 0.6, 0.8, 1.0],
            "count": [0, 0, 4, 8, 18],
            "confidence": [None, None, 0.55, 0.71, 0.91],
            "accuracy": [None, None, 0.5, 0.75, 0.9444],
            "ece": 0.05,
        },
        "versions": {"python": "3.11.9", "ftlit": "0.1.0", "torch": "2.13.0", "lightning": "2.6.6"},
    }


def regression_results() -> dict:
    gold = [0.5 * i for i in range(11)]
    predicted = [g + (0.3 if i % 2 else -0.2) for i, g in enumerate(gold)]
    return {
        "format": 1,
        "created": "2026-12-02T03:10:00+00:00",
        "task": "ftlit.tasks.text.SequenceRegressor",
        "ckpt_path": "/abs/sts/checkpoints/best.ckpt",
        "data": {"dataset": "glue", "config": "stsb", "split": "validation", "rows": 11},
        "labels": None,
        "metrics": {"test/loss": 0.07, "test/pearson": 0.98, "test/spearman": 0.97, "test/mse": 0.065},
        "higher_is_better": {"test/loss": False, "test/pearson": True, "test/spearman": True, "test/mse": False},
        "scatter": {"gold": gold, "predicted": predicted},
        "residuals": {"mean": 0.0273, "std": 0.25, "max_abs": 0.3},
        "versions": {"python": "3.11.9", "ftlit": "0.1.0"},
    }


def make_run(
    root: Path, results: dict | None, directions: bool = True, shift: float = 0.0, config: str = CONFIG
) -> Path:
    """A run folder as `ftlit fit` then `ftlit test` leave it: a fit version, a test version and their files."""
    log_version(root, 0, fit_rows(shift), config=config)
    test = {**{k: v + shift for k, v in TEST_CSV.items()}, "epoch": 0.0}
    log_version(root, 1, [(0, test)], config=config.replace("seed_everything: 42", "seed_everything: 7"))
    if directions:
        found = {"train/loss": False, "train/l2sp": False, "val/loss": False, "val/acc": True, "val/f1": True}
        (root / DIRECTIONS).write_text(json.dumps({**found, "val/brier": False}))
    if results is not None:
        (root / RESULTS).write_text(json.dumps(results, indent=1))
    fit = {"seconds": 12.5 + 100 * shift, "steps": 30, "epochs": 3, "processes": 2, "finished": "2026-12-02T03:09Z"}
    (root / TIMING).write_text(json.dumps({"fit": fit, "test": {"seconds": 1.25, "batches_per_process": 2}}))
    return root


class Page(HTMLParser):
    """What a report holds, read back with the standard library: sections, tables, images, links, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.ids: list[str] = []
        self.sections: dict[str, list[str]] = {}  # id -> the text inside
        self.tables: dict[tuple[str, str], list[list[tuple[str, str | None]]]] = {}  # (section, kind) -> rows
        self.images: list[str] = []
        self.urls: list[str] = []
        self.pre: list[str] = []
        self._section: list[str] = []
        self._table: list | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None
        self._in_pre = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        for name in ("src", "href"):
            if name in a:
                self.urls.append(a[name])
        if tag == "section":
            self._section.append(a["id"])
            self.sections[a["id"]] = []
        elif tag == "table":
            self._table = self.tables.setdefault((self._section[-1], a.get("data-table", "")), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell, self._value = [], a.get("data-value")
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")

    def handle_endtag(self, tag):
        if tag == "section":
            self._section.pop()
        elif tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(("".join(self._cell), self._value))
            self._cell = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data):
        if self._section:
            self.sections[self._section[-1]].append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._in_pre:
            self.pre[-1] += data

    def text(self, section: str) -> str:
        return " ".join("".join(self.sections[section]).split())

    def rows(self, section: str, kind: str) -> dict[str, list[tuple[str, str | None]]]:
        """A table's body rows by their first cell."""
        return {row[0][0]: row[1:] for row in self.tables[(section, kind)][1:]}


def read_page(path: Path) -> tuple[str, Page]:
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def value(cell: tuple[str, str | None]):
    """A numeric cell's exact value (its data-value)."""
    return json.loads(cell[1])


def assert_self_contained(text: str, page: Page) -> None:
    """No script, no link out: every src is an embedded PNG, every href an anchor in the page (or the empty icon)."""
    assert "script" not in page.tags and "iframe" not in page.tags and "object" not in page.tags
    assert all(u.startswith(("#", "data:")) for u in page.urls), page.urls
    assert len(page.ids) == len(set(page.ids)), "ids are not unique"
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG)
        from matplotlib.image import imread

        image = imread(io.BytesIO(data), format="png")
        assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 400, image.shape
        assert image[..., :3].std() > 0.01, "a blank image"


@pytest.fixture(scope="module")
def classified(tmp_path_factory) -> tuple[Path, Path]:
    """A binary classification run, fitted and tested, and its report."""
    run = make_run(tmp_path_factory.mktemp("cls") / "run", classification_results())
    return run, report([str(run)])


def test_a_classification_run_has_every_section_with_the_run_s_own_numbers(classified):
    run, page_path = classified
    assert page_path == run / "report" / REPORT and sorted(p.name for p in page_path.parent.iterdir()) == [REPORT]
    text, page = read_page(page_path)
    wanted = {"header", "scores", "curves", "learning-rates", "extra-losses", "confusion", "roc", "pr", "calibration"}
    assert wanted | {"per-class", "config"} <= set(page.ids)
    assert "regression" not in page.ids and "comparison" not in page.ids
    assert_self_contained(text, page)
    # loss, val metrics, learning rates, l2sp, confusion, ROC, PR, reliability
    assert len(page.images) == 8

    results = classification_results()
    per_class = page.rows("per-class", "per-class")
    assert list(per_class) == ["neg", LABEL]  # the label shown as text
    for entry in results["per_class"]:
        cells = per_class[entry["label"]]
        assert [value(c) for c in cells[:4]] == [entry[k] for k in ("precision", "recall", "f1", "support")]
        assert cells[0][0] == f"{entry['precision']:.4g}"
    tests = page.rows("scores", "test-scores")
    assert {k: value(c[0]) for k, c in tests.items()} == results["metrics"]
    assert tests["test/loss"][1][0] == "lower" and tests["test/acc"][1][0] == "higher"

    val = page.rows("scores", "val-scores")
    assert list(val) == ["val/loss", "val/acc", "val/brier", "val/f1"]
    acc = val["val/acc"]
    assert (acc[0][0], value(acc[1]), value(acc[2]), value(acc[3]), value(acc[4])) == ("higher", 0.9, 19, 1, 0.85)
    # val/brier: no rule knows the name, the run's metric-directions.json says lower is better.
    brier = val["val/brier"]
    assert (brier[0][0], value(brier[1]), value(brier[2])) == ("lower", 0.1, 29)
    assert (val["val/loss"][0][0], value(val["val/loss"][1]), value(val["val/loss"][2])) == ("lower", 0.4, 19)

    # Everything from the files is escaped: the label and the config never become markup.
    assert LABEL not in text and "&lt;b&gt;pos&lt;/b&gt;" in text and "b" not in page.tags
    assert "<script>" not in text
    assert page.pre == [CONFIG]
    assert "csv/version_0/config.yaml" in page.text("config")  # the fit's, not the test's
    header = page.text("header")
    for shown in ("ftlit.tasks.text.SequenceClassifier", "/abs/run/checkpoints/last.ckpt", "/abs/test.jsonl (30 rows)"):
        assert shown in header
    assert f"neg, {LABEL}" in header and "torch 2.13.0" in header and "2026-12-02T03:10:00+00:00" in header
    assert "fit time12.5 s for 30 steps (0.417 s/step) on 2 processes, finished 2026-12-02T03:09Z" in header
    assert "test time1.2 s for 2 batches per process on 1 process which way" in header


def test_the_learning_rate_of_a_frozen_group_is_marked_where_it_is_unfrozen(classified):
    run, _ = classified
    rows, _ = merge([v for v in find_versions(run) if v.kind == "fit"])
    assert unfrozen_steps(rows) == {"lr-AdamW/layer_1": UNFREEZE}  # head starts above 0: never frozen


def test_a_regression_run_shows_predicted_against_gold(tmp_path):
    config = CONFIG.replace("SequenceClassifier", "SequenceRegressor")
    run = make_run(tmp_path / "sts", regression_results(), config=config)
    text, page = read_page(report([str(run)], out=str(tmp_path / "out")))
    assert {"header", "scores", "curves", "regression", "config"} <= set(page.ids)
    assert not {"confusion", "roc", "pr", "calibration", "per-class"} & set(page.ids)
    assert_self_contained(text, page)
    assert len(page.images) == 5  # loss, val metrics, learning rates, l2sp, scatter and residuals
    tests = page.rows("scores", "test-scores")
    assert {k: value(c[0]) for k, c in tests.items()} == regression_results()["metrics"]
    assert "glue / stsb / validation (11 rows)" in page.text("header")


def qa_results() -> dict:
    """A SQuAD v2.0-style question-answering run's test-results.json."""
    return {
        "format": 1,
        "created": "2026-12-02T03:10:00+00:00",
        "task": "ftlit.tasks.qa.QuestionAnswering",
        "ckpt_path": "/abs/qa/checkpoints/last.ckpt",
        "data": {"file": "/abs/dev.json", "rows": 40},
        "labels": None,
        "metrics": {"test/loss": 1.2, "test/exact": 62.5, "test/f1": 70.0, "test/HasAns_f1": 66.0},
        "higher_is_better": {"test/loss": False, "test/exact": True, "test/f1": True},
        "by_answer_length": [
            {"answer_words": "1", "questions": 20, "exact": 75.0, "f1": 80.0},
            {"answer_words": "4-5", "questions": 12, "exact": 41.6667, "f1": 55.5},
        ],
        "by_answerability": [
            {"group": "has answer", "questions": 32, "exact": 62.5, "f1": 66.0},
            {"group": "no answer", "questions": 8, "exact": 62.5, "f1": 62.5},
        ],
        "versions": {"python": "3.11.9", "ftlit": "0.1.0"},
    }


def test_a_qa_run_shows_scores_by_answer_length_and_answerability(tmp_path):
    config = CONFIG.replace("text.SequenceClassifier", "qa.QuestionAnswering")
    results = qa_results()
    text, page = read_page(report([str(make_run(tmp_path / "qa", results, config=config))]))
    assert {"answer-length", "answerability"} <= set(page.ids)
    assert not {"confusion", "roc", "per-class", "regression"} & set(page.ids)
    assert_self_contained(text, page)
    assert len(page.images) == 5  # loss, val metrics, learning rates, l2sp, scores by answer length
    lengths = page.rows("answer-length", "qa-answer-words")
    assert {k: [value(c) for c in v] for k, v in lengths.items()} == {
        g["answer_words"]: [g["questions"], g["exact"], g["f1"]] for g in results["by_answer_length"]
    }
    groups = page.rows("answerability", "qa-group")
    assert [value(c) for c in groups["no answer"]] == [8, 62.5, 62.5] and list(groups) == ["has answer", "no answer"]

    # Without test results, the task's sections say how to get them.
    bare = make_run(tmp_path / "bare", None, config=config)
    _, page = read_page(report([str(bare)]))
    assert page.text("answer-length").endswith("no test results: run ftlit test")


def test_a_run_without_test_results_says_how_to_get_them(tmp_path):
    run = make_run(tmp_path / "run", None, directions=False)
    text, page = read_page(report([str(run)]))
    assert_self_contained(text, page)
    # The task comes from the fit's config: a classifier's test sections are there, each with the note.
    for section in ("confusion", "roc", "pr", "calibration", "per-class"):
        assert page.text(section).endswith("no test results: run ftlit test"), page.text(section)
    assert len(page.images) == 4  # the curves only
    # The test version's metrics.csv still gives the test scores; an old run's directions come from the names.
    tests = page.rows("scores", "test-scores")
    assert {k: value(c[0]) for k, c in tests.items()} == TEST_CSV
    assert "csv/version_1/metrics.csv" in page.text("scores") and "no test results: run ftlit test" in page.text(
        "scores"
    )
    val = page.rows("scores", "val-scores")
    assert (
        val["val/acc"][0][0] == "higher" and val["val/brier"][0][0] == "unknown" and value(val["val/brier"][1]) is None
    )
    assert "guessed from the metric names" in page.text("header")

    # A fit with no test at all, no learning rates and no extra terms: notes, no crash.
    bare = tmp_path / "bare"
    log_version(bare, 0, [(s, {"train/loss": 1.0 / (1 + s), "epoch": 0.0}) for s in range(5)])
    text, page = read_page(report([str(bare)]))
    assert_self_contained(text, page)
    assert "no test results: run ftlit test" in page.text("scores")
    assert "LearningRateMonitor" in page.text("learning-rates") and "l2sp" in page.text("extra-losses")
    assert "no config.yaml" in page.text("config") and len(page.images) == 1


def test_two_runs_side_by_side(classified, tmp_path, capsys):
    first, _ = classified
    other = classification_results()
    other["metrics"] = {**other["metrics"], "test/acc": 0.7}
    second = make_run(tmp_path / "second", other, shift=0.05)
    out = tmp_path / "both"
    cli.main(["report", "--run", str(first), "--run", str(second), "--out", str(out)])
    assert capsys.readouterr().out.strip() == f"ftlit: report of {first}, {second}: {out / REPORT}"
    text, page = read_page(out / REPORT)
    assert_self_contained(text, page)
    assert {"comparison", "curves", "curves-2", "confusion", "confusion-2", "config-2"} <= set(page.ids)

    rows = page.tables[("comparison", "comparison")]
    header = [c[0] for c in rows[0]]
    assert header[:3] == ["run", "best val/loss", "best val/acc"] and "test/acc" in header and "test/f1_neg" in header
    table = {row[0][0]: dict(zip(header[1:], [value(c) for c in row[1:]], strict=True)) for row in rows[1:]}
    assert list(table) == ["1: run", "2: second"]
    assert table["1: run"]["best val/acc"] == 0.9 and table["2: second"]["best val/acc"] == pytest.approx(0.95)
    assert table["1: run"]["test/acc"] == 0.8667 and table["2: second"]["test/acc"] == 0.7
    assert table["2: second"]["best val/brier"] == 0.1
    assert table["1: run"]["fit time (s)"] == 12.5 and table["2: second"]["fit time (s)"] == pytest.approx(17.5)
    # 1 comparison figure, then each run's 8
    assert len(page.images) == 17


report_error = functools.partial(command_error, main)


def test_bad_input_is_one_line_naming_the_argument(tmp_path, capsys):
    missing = tmp_path / "nope"
    err = report_error(["--run", str(missing)], capsys)
    assert err == f"ftlit: error: run: '{missing}' does not exist: give a run folder (trainer.default_root_dir)"
    empty = tmp_path / "empty"
    empty.mkdir()
    err = report_error(["--run", str(empty)], capsys)
    assert err.startswith(f"ftlit: error: run: no metrics.csv under '{empty}'") and "run ftlit fit first" in err
    assert report_error([], capsys) == "ftlit: error: run: required: pass --run (see --help)"

    run = make_run(tmp_path / "run", classification_results())
    err = report_error(["--run", str(run), "--run", f"{run}/."], capsys)
    assert err == f"ftlit: error: run: '{run}/.' is the same run as '{run}': give each run once"
    assert report_error(["--run", str(run), "--smoothing", "1"], capsys) == (
        "ftlit: error: smoothing: must be in [0, 1), got 1.0"
    )
    assert report_error(["--run", str(run), "--explain", "-1"], capsys) == (
        "ftlit: error: explain: must be >= 0, got -1"
    )

    results = run / RESULTS
    results.write_text('{"format": 1, "metrics": ')
    err = report_error(["--run", str(run)], capsys)
    assert err.startswith(f"ftlit: error: run: '{results}' is not valid JSON (")
    results.write_text(json.dumps({**classification_results(), "format": 2}))
    err = report_error(["--run", str(run)], capsys)
    assert err.startswith(f"ftlit: error: run: '{results}' has format 2, and this ftlit reads format 1")
    results.write_text(json.dumps(["not", "an", "object"]))
    assert report_error(["--run", str(run)], capsys).startswith(f"ftlit: error: run: '{results}' has format None")
    results.write_text(json.dumps({**classification_results(), "metrics": {"test/acc": "high"}}))
    err = report_error(["--run", str(run)], capsys)
    assert err.startswith(f"ftlit: error: run: '{results}': metrics is malformed (test/acc is 'high'")
    results.write_text(json.dumps({**classification_results(), "confusion_matrix": [[1, 2, 3]]}))
    err = report_error(["--run", str(run)], capsys)
    assert err.startswith(f"ftlit: error: run: '{results}': confusion_matrix is malformed (")
    (run / DIRECTIONS).write_text("{oops")
    err = report_error(["--run", str(run)], capsys)
    assert err.startswith(f"ftlit: error: run: '{run / DIRECTIONS}' is not valid JSON (")
    assert not (run / "report").exists()
    assert list(tmp_path.glob(".*")) == [] and list(run.glob(".*")) == []  # no temporary folders left


def test_an_existing_output_needs_overwrite_and_only_a_report_is_replaced(tmp_path, capsys):
    run = tmp_path / "run"
    log_version(run, 0, [(s, {"train/loss": 1.0 / (1 + s), "epoch": 0.0}) for s in range(5)])
    out = tmp_path / "out"
    out.mkdir()
    (out / REPORT).write_text("an earlier report")
    err = report_error(["--run", str(run), "--out", str(out)], capsys)
    assert err == f"ftlit: error: out: '{out}' exists and is not empty: pass --overwrite or another folder"
    main(["--run", str(run), "--out", str(out), "--overwrite"])
    assert (out / REPORT).read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]  # no temporary or old folders beside it

    err = report_error(["--run", str(run), "--out", str(run), "--overwrite"], capsys)
    assert err.startswith(f"ftlit: error: out: '{run}' holds more than a report (")
    assert (run / "csv" / "version_0" / "metrics.csv").is_file()


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "usage: ftlit report" in help_text and "--run RUN" in help_text
    for option in ("--out", "--overwrite", "--smoothing", "A run folder", "Folder to write", "moving average"):
        assert option in help_text


def test_a_real_browser_shows_the_page_without_errors_and_loads_every_image(classified):
    reason = browser_missing()
    if reason is not None:
        pytest.skip(f"needs a headless browser: {reason}")
    from playwright.sync_api import sync_playwright

    _, page_path = classified
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images, i => ({complete: i.complete, width: i.naturalWidth}))"
            )
            title = page.title()
            sections = page.evaluate("() => Array.from(document.querySelectorAll('section'), s => s.id)")
            label = page.evaluate(
                "() => document.querySelector('[data-table=per-class] tbody td').parentElement"
                ".nextElementSibling.firstElementChild.textContent"
            )
        finally:
            browser.close()
    assert errors == []
    assert len(images) == 8 and all(i["complete"] and i["width"] > 0 for i in images), images
    assert title == "ftlit report: run" and "confusion" in sections
    assert label == LABEL  # shown as text
