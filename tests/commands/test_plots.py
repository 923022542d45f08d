"""`ftlit plot`: curves and best scores from a run's metrics.csv files, resumed and test versions included."""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from conftest import cli_args, column, command_error, read_metrics
from ftlit import cli
from ftlit.cli import FtlitCLI
from ftlit.commands.plot import find_versions, main, merge, metric_mode, plot, series, smooth
from ftlit.core.results import DIRECTIONS, RESULTS

pytest.importorskip("matplotlib")  # the `plots` extra

STEPS_PER_EPOCH = 10
# Validation scores at the end of each epoch (steps 9, 19, 29): val/acc peaks in epoch 1, val/loss is lowest there.
VAL = {9: (0.70, 0.60), 19: (0.90, 0.40), 29: (0.85, 0.45)}


def log_version(root: Path, version: int, rows: list[tuple[int, dict[str, float]]]) -> Path:
    """Write ``csv/version_<version>/metrics.csv`` with Lightning's own CSVLogger, as a run does: sparse rows."""
    logger = CSVLogger(save_dir=str(root), name="csv", version=version)
    for step, metrics in rows:
        logger.log_metrics(metrics, step=step)
    logger.save()
    return Path(logger.log_dir) / "metrics.csv"


def fit_rows(first: int, last: int) -> list[tuple[int, dict[str, float]]]:
    """What a fit logs per step: the learning rate (LearningRateMonitor), train/loss, and validation at epoch ends."""
    rows = []
    for step in range(first, last + 1):
        epoch = float(step // STEPS_PER_EPOCH)
        rows.append((step, {"lr-AdamW": 1e-3 * (1 - step / 30)}))
        rows.append((step, {"train/loss": 1.0 / (1 + step) + 0.05 * (step % 2), "epoch": epoch}))
        if step in VAL:
            acc, loss = VAL[step]
            rows.append((step, {"val/acc": acc, "val/f1": acc - 0.1, "val/loss": loss, "epoch": epoch}))
    return rows


TEST = {"test/acc": 0.88, "test/f1": 0.86, "test/loss": 0.42}


@pytest.fixture
def resumed_run(tmp_path) -> Path:
    """A fit stopped after 2 epochs, resumed for a third (a new version), then `ftlit test` (a test-only version)."""
    root = tmp_path / "run"
    log_version(root, 0, fit_rows(0, 19))
    log_version(root, 1, fit_rows(20, 29))
    log_version(root, 2, [(0, {**TEST, "epoch": 0.0})])
    return root


def load_summary(folder: Path) -> dict:
    # Strict JSON: NaN and infinity would fail here.
    return json.loads((folder / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"JSON has {c}"))


def assert_image(path: Path) -> None:
    """A real PNG that matplotlib reads back: height x width x RGBA, not blank."""
    from matplotlib.image import imread

    image = imread(path)
    assert image.ndim == 3 and image.shape[2] == 4 and image.shape[0] >= 300 and image.shape[1] >= 400, image.shape
    assert image[..., :3].std() > 0.01, f"{path.name} is blank"


plot_error = functools.partial(command_error, main)


def test_resumed_run_plots_continuous_curves_and_the_best_and_test_scores(resumed_run, capsys):
    main(["--run", str(resumed_run)])
    out = resumed_run / "plots"
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "lr.png", "metrics.png", "summary.json"]
    for name in ("loss.png", "lr.png", "metrics.png"):
        assert_image(out / name)

    summary = load_summary(out)
    assert summary["plots"] == ["loss.png", "metrics.png", "lr.png"]
    acc, loss = summary["val"]["val/acc"], summary["val"]["val/loss"]
    assert (acc["mode"], acc["best"], acc["step"], acc["epoch"]) == ("max", 0.90, 19, 1)
    assert (acc["last"], acc["last_step"], acc["evaluations"]) == (0.85, 29, 3)
    assert (loss["mode"], loss["best"], loss["step"]) == ("min", 0.40, 19)
    assert summary["val"]["val/f1"]["best"] == pytest.approx(0.80)
    assert summary["test"] == {"version": 2, "metrics": TEST}
    assert summary["train"]["train/loss"]["last_step"] == 29 and summary["train"]["train/loss"]["points"] == 30
    kinds = [(v["version"], v["kind"], v.get("first_step"), v.get("last_step")) for v in summary["versions"]]
    assert kinds == [(0, "fit", 0, 19), (1, "fit", 20, 29), (2, "test", 0, 0)]
    assert summary["versions"][2]["metrics"] == TEST  # reported, not merged into the curves

    printed = capsys.readouterr().out
    assert f"ftlit: plotted {resumed_run} to {out}" in printed
    assert "best val/acc = 0.9 at step 19, epoch 1 (max)" in printed and "test (version_2): test/acc = 0.88" in printed


def test_versions_merge_in_step_order_and_a_test_version_stays_out_of_the_curves(resumed_run):
    versions = find_versions(resumed_run)
    assert [(v.number, v.kind) for v in versions] == [(0, "fit"), (1, "fit"), (2, "test")]
    rows, superseded = merge([v for v in versions if v.kind == "fit"])
    assert superseded == {}
    steps, losses = series(rows, "train/loss")
    assert steps == list(range(30))  # version 1 continues version 0, and the test's step 0 is not among them
    assert series(rows, "val/acc") == ([9, 19, 29], [0.70, 0.90, 0.85])
    assert not any(k.startswith("test/") for r in rows for k in r)
    assert [int(r["step"]) for r in rows] == sorted(int(r["step"]) for r in rows)


def test_rows_a_crashed_run_logged_after_its_checkpoint_are_replaced_by_the_resumed_version(tmp_path, capsys):
    # version 0 ran to step 24 but its last checkpoint was at step 20: the resumed version re-logs steps 20-24.
    root = tmp_path / "run"
    log_version(root, 0, [(s, {"train/loss": 9.0, "epoch": 0.0}) for s in range(25)])
    log_version(root, 1, [(s, {"train/loss": 1.0, "epoch": 0.0}) for s in range(20, 30)])
    rows, superseded = merge(find_versions(root))
    steps, losses = series(rows, "train/loss")
    assert steps == list(range(30)) and losses == [9.0] * 20 + [1.0] * 10
    assert superseded == {0: 5}

    main(["--run", str(root)])
    summary = load_summary(root / "plots")
    assert summary["versions"][0]["superseded_rows"] == 5
    assert summary["plots"] == ["loss.png"]  # no validation, no learning rate: nothing else to draw
    assert "version_0: 5 rows replaced by a later (resumed) version" in capsys.readouterr().out


def test_versions_are_ordered_by_number_not_by_name(tmp_path):
    # Sorted as text, version_10 would come before version_9 and supersede it from step 0.
    root = tmp_path / "run"
    log_version(root, 9, fit_rows(0, 19))
    log_version(root, 10, fit_rows(20, 29))
    assert [v.number for v in find_versions(root)] == [9, 10]
    rows, superseded = merge(find_versions(root))
    assert series(rows, "train/loss")[0] == list(range(30)) and superseded == {}


def test_version_option_plots_one_version(resumed_run, tmp_path):
    out = plot(str(resumed_run), str(tmp_path / "v1"), version=1)
    summary = load_summary(out)
    assert [v["version"] for v in summary["versions"]] == [1]
    assert summary["val"]["val/acc"]["best"] == 0.85 and summary["val"]["val/acc"]["step"] == 29
    assert summary["test"] is None

    # A test-only version has no curves: summary.json alone, with its scores.
    out = plot(str(resumed_run), str(tmp_path / "v2"), version=2)
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert load_summary(out)["test"]["metrics"] == TEST and load_summary(out)["plots"] == []


def test_a_version_folder_or_the_csv_folder_can_be_given_as_the_run(resumed_run, tmp_path):
    assert [v.number for v in find_versions(resumed_run / "csv")] == [0, 1, 2]
    assert [v.number for v in find_versions(resumed_run / "csv" / "version_1")] == [1]


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("val/acc", "max"),
        ("val/f1", "max"),
        ("val/f1_macro", "max"),
        ("val/exact_match", "max"),
        ("val/HasAns_exact", "max"),
        ("val/pearson", "max"),
        ("val/spearman", "max"),
        ("val/precision", "max"),
        ("val/recall", "max"),
        ("val/mcc", "max"),
        ("val/loss", "min"),
        ("val/mse", "min"),
        ("val/throughput", None),
    ],
)
def test_which_way_is_better(name, mode):
    assert metric_mode(name) == mode


def test_the_run_s_own_directions_win_over_the_name():
    assert metric_mode("val/brier", {"val/brier": False}) == "min"  # no rule knows the name
    assert metric_mode("val/acc", {"val/acc": False}) == "min"  # the run says so, whatever the name suggests
    assert metric_mode("val/acc", {"test/acc": False}) == "min"  # test/acc in test-results.json tells val/acc
    assert metric_mode("val/acc", {"val/acc": None}) is None  # the run does not know: no best, no guess
    assert metric_mode("val/acc", {"val/brier": True}) == "max"  # a metric the run does not list: the name decides
    assert metric_mode("val/acc", None) == "max"


def test_a_run_s_metric_directions_choose_the_best_point(resumed_run, tmp_path, capsys):
    # Contrived, to tell the sources apart: this run says lower val/acc is better.
    (resumed_run / DIRECTIONS).write_text(json.dumps({"val/acc": False, "val/loss": False, "val/f1": None}))
    summary = load_summary(plot(str(resumed_run), str(tmp_path / "a")))
    acc = summary["val"]["val/acc"]
    assert (acc["mode"], acc["best"], acc["step"]) == ("min", 0.70, 9)
    assert (summary["val"]["val/f1"]["mode"], summary["val"]["val/f1"]["best"]) == (None, None)
    # Given a version folder, the directions are still the run's.
    summary = load_summary(plot(str(resumed_run / "csv" / "version_0"), str(tmp_path / "b")))
    assert summary["val"]["val/acc"]["mode"] == "min"

    # Without metric-directions.json, test-results.json's higher_is_better speaks for the same metric.
    (resumed_run / DIRECTIONS).unlink()
    results = {"format": 1, "metrics": TEST, "higher_is_better": {"test/acc": False, "test/loss": False}}
    (resumed_run / RESULTS).write_text(json.dumps(results))
    summary = load_summary(plot(str(resumed_run), str(tmp_path / "c")))
    assert summary["val"]["val/acc"]["mode"] == "min" and summary["val"]["val/f1"]["mode"] == "max"

    (resumed_run / DIRECTIONS).write_text("{not json")
    err = plot_error(["--run", str(resumed_run), "--out", str(tmp_path / "d")], capsys)
    assert err.startswith(f"ftlit: error: run: '{resumed_run / DIRECTIONS}' is not valid JSON (")


def test_ties_go_to_the_earliest_step_and_non_finite_values_are_never_best(tmp_path):
    root = tmp_path / "run"
    rows = [(s, {"train/loss": 0.5, "epoch": 0.0}) for s in range(8)]
    rows += [(1, {"val/acc": 0.8, "val/loss": math.nan}), (3, {"val/acc": 0.8, "val/loss": 0.3})]
    rows += [(5, {"val/acc": 0.6, "val/loss": 0.5}), (7, {"val/acc": 0.7, "val/loss": math.inf})]
    log_version(root, 0, rows)
    summary = load_summary(plot(str(root)))
    assert summary["val"]["val/acc"]["step"] == 1  # as ModelCheckpoint keeps the first of equal scores
    assert (summary["val"]["val/loss"]["best"], summary["val"]["val/loss"]["step"]) == (0.3, 3)
    assert summary["val"]["val/loss"]["last"] is None  # inf: null in strict JSON


def test_smoothing_is_tensorboard_s_debiased_average():
    assert smooth([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # debiased: no pull towards 0
    assert smooth([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.5 * 0.5 + 1.5) / 0.75])
    assert smooth([1.0, 3.0], 0.0) == [1.0, 3.0]


def test_learning_rate_groups_on_one_schedule_are_drawn_once(tmp_path):
    root = tmp_path / "run"
    rows = [(s, {"lr-AdamW/head": 1e-3, "lr-AdamW/head/no_decay": 1e-3, "lr-AdamW/layer.0": 5e-4}) for s in range(5)]
    rows += [(s, {"lr-AdamW-momentum": 0.9}) for s in range(5)]  # log_momentum: not a learning rate
    log_version(root, 0, rows)
    out = plot(str(root))
    assert load_summary(out)["plots"] == ["lr.png"]
    assert_image(out / "lr.png")


def test_existing_output_needs_overwrite_and_is_replaced_whole(resumed_run, tmp_path, capsys):
    out = tmp_path / "plots"
    out.mkdir()
    (out / "old.png").write_bytes(b"an earlier plot")
    err = plot_error(["--run", str(resumed_run), "--out", str(out)], capsys)
    assert err == f"ftlit: error: out: '{out}' exists and is not empty: pass --overwrite or another folder"
    assert [p.name for p in out.iterdir()] == ["old.png"]

    main(["--run", str(resumed_run), "--out", str(out), "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["loss.png", "lr.png", "metrics.png", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots", "run"]  # no temporary or old folders beside it

    # --overwrite never deletes what a plot did not write (here: the run itself).
    err = plot_error(["--run", str(resumed_run), "--out", str(tmp_path), "--overwrite"], capsys)
    assert err.startswith(f"ftlit: error: out: '{tmp_path}' holds more than plots (plots, run)")
    assert (resumed_run / "csv" / "version_0" / "metrics.csv").is_file()


def test_bad_input_is_one_line_naming_the_field(resumed_run, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = plot_error(["--run", str(empty)], capsys)
    assert err.startswith(f"ftlit: error: run: no metrics.csv under '{empty}'")
    err = plot_error(["--run", str(tmp_path / "nope")], capsys)
    assert err == f"ftlit: error: run: '{tmp_path / 'nope'}' is not a folder: give a run's trainer.default_root_dir"
    assert plot_error([], capsys) == "ftlit: error: run: required: pass --run (see --help)"
    err = plot_error(["--run", str(resumed_run), "--version", "7"], capsys)
    assert err == f"ftlit: error: version: no version_7 with a metrics.csv under '{resumed_run}' (there: [0, 1, 2])"
    err = plot_error(["--run", str(resumed_run), "--smoothing", "1"], capsys)
    assert err == "ftlit: error: smoothing: must be in [0, 1), got 1.0"
    assert plot_error(["--run", str(resumed_run), "--version", "x"], capsys).startswith("ftlit: error: version:")
    (tmp_path / "file").write_text("")
    err = plot_error(["--run", str(resumed_run), "--out", str(tmp_path / "file")], capsys)
    assert err == f"ftlit: error: out: '{tmp_path / 'file'}' is a file: give a folder"

    # Files that are not Lightning's metrics.csv.
    version = tmp_path / "other" / "csv" / "version_0"
    version.mkdir(parents=True)
    (version / "metrics.csv").write_text("epoch,loss\n0,1.0\n")
    err = plot_error(["--run", str(tmp_path / "other")], capsys)
    assert err == f"ftlit: error: run: '{version / 'metrics.csv'}' has no step column: not a Lightning metrics.csv"
    (version / "metrics.csv").write_text("step,train/loss\n0,oops\n")
    err = plot_error(["--run", str(tmp_path / "other")], capsys)
    assert err == f"ftlit: error: run: '{version / 'metrics.csv'}' line 2: train/loss is not a number: 'oops'"
    (version / "metrics.csv").write_text("step,train/loss\n")
    err = plot_error(["--run", str(tmp_path / "other")], capsys)
    assert err.startswith("ftlit: error: run: the metrics.csv files under") and "hold no rows yet" in err

    # matplotlib missing: named with the extra to install, before anything is written.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    err = plot_error(["--run", str(resumed_run)], capsys)
    assert err == 'ftlit: error: matplotlib: not installed, and ftlit plot needs it: pip install "ftlit[plots]"'
    assert not (resumed_run / "plots").exists()
    assert list(tmp_path.glob(".*")) == [] and list(resumed_run.glob(".*")) == []


def test_a_partly_written_last_row_is_skipped(tmp_path):
    # A run still writing: the last line is cut short (no step yet, or fewer cells than the header).
    version = tmp_path / "run" / "csv" / "version_0"
    version.mkdir(parents=True)
    (version / "metrics.csv").write_text("epoch,step,train/loss\n0,0,0.7\n0,1,0.6\n0,")
    rows = find_versions(tmp_path / "run")[0].rows
    assert rows == [{"epoch": 0.0, "step": 0.0, "train/loss": 0.7}, {"epoch": 0.0, "step": 1.0, "train/loss": 0.6}]


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "usage: ftlit plot" in help_text and "--run RUN" in help_text
    for option in ("--out", "--version", "--overwrite", "--smoothing"):
        assert option in help_text
    for doc in (
        "The run folder",
        "Folder to write",
        "Plot only ``version_N``",
        "Replace an existing",
        "moving average",
    ):
        assert doc in help_text


def test_ftlit_plot_is_a_subcommand(resumed_run, capsys):
    cli.main(["plot", "--run", str(resumed_run)])
    assert "ftlit: plotted" in capsys.readouterr().out


def test_a_real_fit_resumed_and_tested_plots_its_own_scores(tiny_bert, toy_data, tmp_path, capsys):
    root = tmp_path / "run"
    extra = [
        "--checkpoint.monitor=val/acc",
        "--checkpoint.mode=max",
        "--trainer.callbacks+=lightning.pytorch.callbacks.LearningRateMonitor",
        "--trainer.callbacks.logging_interval=step",
    ]
    FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, "--trainer.max_epochs=1", *extra)])
    fit = FtlitCLI(args=["fit", *cli_args(tiny_bert, toy_data, root, *extra), "--ckpt_path=last"])
    FtlitCLI(args=["test", *cli_args(tiny_bert, toy_data, root), "--ckpt_path=best"])

    main(["--run", str(root)])
    out = root / "plots"
    summary = load_summary(out)
    assert summary["plots"] == ["loss.png", "metrics.png", "lr.png"]
    for name in summary["plots"]:
        assert_image(out / name)
    assert [(v["version"], v["kind"]) for v in summary["versions"]] == [(0, "fit"), (1, "fit"), (2, "test")]
    # The resumed run's steps continue the first run's: 96 rows / batch 8 = 12 steps per epoch.
    assert (summary["versions"][1]["first_step"], summary["train"]["train/loss"]["points"]) == (12, 24)
    # The best val/acc is the one ModelCheckpoint kept, and the test scores are the test run's own.
    acc = summary["val"]["val/acc"]
    assert acc["best"] == pytest.approx(float(fit.trainer.checkpoint_callback.best_model_score))
    assert acc["evaluations"] == 2 and acc["step"] in (11, 23)
    test_rows = read_metrics(root)  # the latest version: the test's
    assert summary["test"]["metrics"]["test/acc"] == pytest.approx(column(test_rows, "test/acc")[0])
    assert set(summary["val"]) >= {"val/loss", "val/acc", "val/f1", "val/mcc"}
    assert "best val/acc" in capsys.readouterr().out
