"""``ftlit tune``: real studies (SQLite), each trial a real ``ftlit fit`` process on the tiny model."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers.runs import ONE_THREAD, TESTS, ftlit, ftlit_at_once

from conftest import command_error, read_metrics, toy_rows, write_jsonl

optuna = pytest.importorskip("optuna")

GOOD_LR, BAD_LR, NAN_LR = 3e-3, 1e-7, 1e30


def write_yaml(path: Path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


@pytest.fixture
def base(tmp_path, tiny_bert, toy_data) -> str:
    """The config the searches start from: the tiny model on 400 toy rows (50 steps an epoch: at GOOD_LR the
    validation loss falls from 0.69 to about 0.03 in the first epoch), selected on val/loss."""
    toy_data = {**toy_data, "train_file": str(write_jsonl(tmp_path / "train-400.jsonl", toy_rows(400, 0)))}
    return write_yaml(
        tmp_path / "base.yaml",
        {
            "seed_everything": 0,
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "max_epochs": 2,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "log_every_n_steps": 1,
            },
            "checkpoint": {"monitor": "val/loss", "mode": "min"},
            "model": {
                "class_path": "ftlit.tasks.text.SequenceClassifier",
                "init_args": {"backbone": tiny_bert, "learning_rate": GOOD_LR},
            },
            "data": {
                "class_path": "ftlit.tasks.text.ClassificationDataModule",
                "init_args": {**toy_data, "batch_size": 8},
            },
        },
    )


def load(study_dir: Path, name: str = "search") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'study.db'}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False)]


def tune(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return ftlit("tune", *args, check=check, env=ONE_THREAD)


def test_a_study_completes_prunes_and_fails_trials_and_its_best_config_reruns_exactly(tmp_path, base):
    search = write_yaml(
        tmp_path / "search.yaml",
        {
            "sampler": "random",
            "pruner": {"name": "median", "n_startup_trials": 1},
            "space": {
                "model.learning_rate": [GOOD_LR, BAD_LR, NAN_LR],
                "model.warmup_ratio": [0.0, 1.5],
            },
            "enqueue": [
                {"model.learning_rate": GOOD_LR, "model.warmup_ratio": 0.0},
                {"model.learning_rate": BAD_LR, "model.warmup_ratio": 0.0},  # worse after an epoch: pruned
                {"model.learning_rate": NAN_LR, "model.warmup_ratio": 0.0},  # the loss turns NaN: failed
                {"model.learning_rate": GOOD_LR, "model.warmup_ratio": 1.5},  # refused by the model: failed
            ],
        },
    )
    out = tmp_path / "study"
    tune("--config", base, "--search", search, "--n_trials", "4", "--study_dir", str(out))
    study = load(out)
    assert states(study) == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    trials = study.get_trials(deepcopy=False)
    # Pruned at its first validation (an epoch of 50 steps), against the first trial's value there.
    assert list(trials[1].intermediate_values) == [50]
    assert trials[1].intermediate_values[50] > trials[0].intermediate_values[50]
    assert trials[1].user_attrs["reason"] == "pruned at step 50"
    assert "training loss is nan" in trials[2].user_attrs["reason"]
    assert trials[3].user_attrs["reason"].startswith("model.warmup_ratio: must be in [0, 1)")
    # The value is the best validation of the run (what its best checkpoint holds), reported after each epoch.
    assert list(trials[0].intermediate_values) == [50, 100]
    assert trials[0].value == min(trials[0].intermediate_values.values())
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["state"] for r in rows] == ["complete", "pruned", "fail", "fail"]
    assert [float(r["model.init_args.learning_rate"]) for r in rows] == [GOOD_LR, BAD_LR, NAN_LR, GOOD_LR]
    assert rows[3]["reason"] == trials[3].user_attrs["reason"] and not rows[0]["reason"]
    assert (out / "history.png").stat().st_size > 1000
    # Each trial is a plain run folder: its config is what ran, and a user reruns it by hand.
    saved = (out / "trials" / "0" / "csv" / "version_0" / "config.yaml").read_text()
    assert yaml.safe_load(saved)["model"]["init_args"]["learning_rate"] == GOOD_LR
    assert "TrialReporter" not in saved
    # best.yaml is the best trial's config in a new folder: `ftlit fit` on it retrains the same model.
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["trainer"]["default_root_dir"] == str(out / "best")
    ftlit("fit", "--config", str(out / "best.yaml"), env=ONE_THREAD)
    again = [float(r["val/loss"]) for r in read_metrics(out / "best") if r.get("val/loss")]
    assert again == pytest.approx(list(trials[0].intermediate_values.values()), abs=1e-6)
    # `ftlit report` on the study folder: the search (every trial, its plots), then the best trial's own report.
    summary = json.loads((out / "study.json").read_text())
    assert summary["best"]["number"] == 0 and summary["trials"] == {
        "complete": 1, "pruned": 1, "fail": 2, "running": 0, "waiting": 0
    }  # fmt: skip
    from ftlit.commands.report import report

    page = report([str(out)], out=str(tmp_path / "report")).read_text()
    search = page.split('<section id="search"', 1)[1].split("</section>", 1)[0]
    assert (
        search.count("<tr>") == 5 and "pruned at step 50" in search and search.count("data:image/png") == 1
    )  # history; importances need 2 complete
    assert '<section id="curves"' in page  # the best trial's learning curves follow


def test_search_finds_the_good_learning_rate_with_ddp_trials_drawn_once(tmp_path, base):
    """Each trial draws its values once, in the tune process: both ranks of a DDP trial train with them, and rank 0
    alone reports (one value per validation)."""
    search = write_yaml(
        tmp_path / "search.yaml",
        {"sampler": {"name": "random"}, "pruner": "none", "space": {"model.learning_rate": [BAD_LR, GOOD_LR]}},
    )
    ddp = write_yaml(tmp_path / "ddp.yaml", {"trainer": {"devices": 2, "strategy": "ddp"}})
    out = tmp_path / "study"
    tune("--config", base, "--config", ddp, "--search", search, "--n_trials", "2", "--study_dir", str(out),
         "--seed", "0")  # fmt: skip
    study = load(out)
    trials = study.get_trials(deepcopy=False)
    assert states(study) == ["COMPLETE"] * 2
    assert {t.params["model.init_args.learning_rate"] for t in trials} == {BAD_LR, GOOD_LR}  # seed 0 draws both
    assert study.best_trial.params["model.init_args.learning_rate"] == GOOD_LR
    for trial in trials:
        assert list(trial.intermediate_values) == [25, 50]  # 200 rows per rank, batch 8: one value per validation
        saved = yaml.safe_load((Path(trial.user_attrs["run_folder"]) / "csv/version_0/config.yaml").read_text())
        assert saved["model"]["init_args"]["learning_rate"] == trial.params["model.init_args.learning_rate"]
        assert saved["trainer"]["devices"] == 2


def test_two_workers_share_one_study_and_run_each_trial_once(tmp_path, base):
    search = write_yaml(
        tmp_path / "search.yaml",
        {"sampler": "random", "pruner": "none", "space": {"model.learning_rate": [GOOD_LR, 1e-3, 1e-4, 1e-5]}},
    )
    out = tmp_path / "study"
    args = ["tune", "--config", base, "--search", search, "--n_trials", "4", "--study_dir", str(out),
            "--max_epochs", "1"]  # fmt: skip
    results = ftlit_at_once([*args, "--seed", "1"], [*args, "--seed", "2"], env=ONE_THREAD)
    assert [r.returncode for r in results] == [0, 0], results[0].stderr[-2000:] + results[1].stderr[-2000:]
    study = load(out)
    assert states(study) == ["COMPLETE"] * 4
    ran = [line for r in results for line in r.stdout.splitlines() if " starts:" in line]
    assert sorted(line.split()[3] for line in ran) == ["0", "1", "2", "3"], ran
    for number in range(4):
        log = (out / "trials" / str(number) / "fit.log").read_text()
        assert log.count("$ ftlit fit") == 1
    assert (out / "importances.png").read_bytes().startswith(b"\x89PNG")  # four finished trials: importances too


def test_a_search_killed_mid_trial_resumes_that_trial_exactly_and_stops_at_the_total(tmp_path, base):
    slow = write_yaml(
        tmp_path / "slow.yaml",
        {"trainer": {"callbacks": [{"class_path": "faults.Slow", "init_args": {"seconds": 0.1}}]}},
    )
    search = write_yaml(tmp_path / "search.yaml", {"pruner": "none", "space": {"model.learning_rate": [GOOD_LR]}})
    out = tmp_path / "study"
    args = ["-m", "ftlit", "tune", "--config", base, "--config", slow, "--search", search, "--n_trials", "2",
            "--study_dir", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(TESTS), **ONE_THREAD}
    worker = subprocess.Popen([sys.executable, *args], cwd=TESTS, env=env, stdout=subprocess.PIPE, text=True)
    checkpoint = out / "trials" / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600  # generous: a loaded machine
    while not checkpoint.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "trial 0 never saved its first epoch"
    worker.kill()  # kill -9: the trial's fit is told to stop (SIGTERM) and saves where it is
    worker.wait()
    done = subprocess.run([sys.executable, *args], cwd=TESTS, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    study = load(out)
    trials = study.get_trials(deepcopy=False)
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]  # the lost trial, its retry, and one more
    assert trials[0].user_attrs["reason"].startswith("interrupted")
    assert trials[1].user_attrs["run_folder"] == str(out / "trials" / "0")  # resumed in its own folder
    assert "--ckpt_path last" in (out / "trials" / "0" / "fit.log").read_text()
    assert "trial 1 resumes trial 0" in done.stdout
    # Resume is exact: the resumed trial reports what the uninterrupted one (same values) reports, step by step.
    assert trials[1].intermediate_values == pytest.approx(trials[2].intermediate_values, abs=1e-6)
    assert list(trials[1].intermediate_values) == [50, 100]


def test_budget_storage_and_name_options(tmp_path, base):
    """--timeout starts no trial after it, --max_steps caps each trial, --storage and --study_name place the study."""
    search = write_yaml(tmp_path / "search.yaml", {"pruner": "none", "space": {"model.learning_rate": [GOOD_LR]}})
    db = tmp_path / "elsewhere.db"
    tune("--config", base, "--search", search, "--n_trials", "3", "--study_dir", str(tmp_path / "study"),
         "--timeout", "1", "--max_steps", "3", "--storage", f"sqlite:///{db}", "--study_name", "mine")  # fmt: skip
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{db}")
    trials = study.get_trials(deepcopy=False)
    assert states(study) == ["COMPLETE"] and list(trials[0].intermediate_values) == [3]
    assert not (tmp_path / "study" / "study.db").exists()
    assert yaml.safe_load((tmp_path / "study" / "best.yaml").read_text())["trainer"]["max_steps"] == 3


def test_a_config_error_outside_the_searched_keys_stops_the_search(tmp_path, base):
    search = write_yaml(
        tmp_path / "search.yaml",
        {"metric": "val/accuracy", "direction": "maximize", "space": {"model.learning_rate": [GOOD_LR, 1e-3]}},
    )
    out = tmp_path / "study"
    done = tune("--config", base, "--search", search, "--n_trials", "3", "--study_dir", str(out), check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("ftlit: error: config: trial 0 failed on the config")
    assert "checkpoint.monitor" in done.stderr
    assert states(load(out)) == ["FAIL"]


@pytest.mark.parametrize(
    "space, extra, message",
    [
        (
            {"model.learnin_rate": [1e-3]},
            [],
            "search.space.model.learnin_rate: 'model.learnin_rate' is not a config "
            "key: did you mean model.init_args.learning_rate?",
        ),
        ({"model.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-5}}, [], "an empty range"),
        ({"model.learning_rate": {"type": "gaussian", "low": 0, "high": 1}}, [], "unknown distribution 'gaussian'"),
        ({"model.learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, [], "must start above 0"),
        ({"model.learning_rate": []}, [], "search.space.model.learning_rate.choices: an empty choice"),
        (
            {"model.learning_rate": {"type": "int", "low": 0, "high": 2, "when": {"model.lora_rank": 8}}},
            [],
            "'model.lora_rank' is not a key searched above this one",
        ),
        ({"model.learning_rate": [1e-3]}, ["--storage", "nosuchdb://x/y"], "storage: cannot open 'nosuchdb://x/y'"),
        ({"model.learning_rate": [1e-3]}, ["--n_trials", "0"], "n_trials: must be at least 1"),
        ({"trainer.callbacks.0.init_args.x": [1]}, [], "is not a config key"),
    ],
)
def test_bad_search_input_is_one_line_before_any_trial(tmp_path, base, capsys, space, extra, message):
    from ftlit.commands.tune import main

    search = write_yaml(tmp_path / "search.yaml", {"space": space})
    out = tmp_path / "study"
    argv = ["--config", base, "--search", search, "--n_trials", "2", "--study_dir", str(out), *extra]
    error = command_error(main, argv, capsys)
    assert message in error, error
    assert not (out / "trials").exists()


def test_search_file_options_are_checked(tmp_path, base, capsys):
    from ftlit.commands.tune import main

    cases = {
        "sampler: {name: cmaes}": "search.sampler.name: unknown search.sampler 'cmaes'",
        "sampler: {name: tpe, n_startup: 3}": "search.sampler: TPESampler:",
        "pruner: {name: median, warmup: 2}": "search.pruner: MedianPruner:",
        "metric: val/f1": "search.direction: say whether val/f1 is to maximize or minimize",
        "budget: 3": "search.budget: not a search file key",
        "enqueue: [{model.weight_decay: 0.1}]": "search.enqueue.0: 'model.weight_decay' is not a searched key",
    }
    for line, message in cases.items():
        search = tmp_path / "search.yaml"
        search.write_text(f"{line}\nspace:\n  model.learning_rate: [1.0e-3]\n")
        argv = ["--config", base, "--search", str(search), "--n_trials", "1", "--study_dir", str(tmp_path / "s")]
        assert message in command_error(main, argv, capsys), line


def test_a_study_refuses_another_search_file_or_config(tmp_path, base):
    from ftlit.commands.tune import base_config, open_study
    from ftlit.errors import ConfigError
    from ftlit.search.space import config_keys, load_search

    keys = set(config_keys(base_config([base])))
    config = Path(base).read_text()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    (tmp_path / "a.yaml").write_text("space:\n  model.learning_rate: [1.0e-3]\n")
    (tmp_path / "b.yaml").write_text("space:\n  model.learning_rate: [1.0e-4]\n")
    a, b = load_search(tmp_path / "a.yaml", keys), load_search(tmp_path / "b.yaml", keys)
    open_study(optuna, url, "s", a, "minimize", 0, config)
    open_study(optuna, url, "s", a, "minimize", 0, config)  # the same files: the same study, continued
    with pytest.raises(ConfigError, match="search: study 's' was made with another search"):
        open_study(optuna, url, "s", b, "minimize", 0, config)
    config += "\nmodel:\n  init_args:\n    weight_decay: 0.5\n"  # the file edited between two runs
    with pytest.raises(ConfigError, match="config: study 's' was made with another config"):
        open_study(optuna, url, "s", a, "minimize", 0, config)
    with pytest.raises(ConfigError, match="search.direction: study 's' was made to minimize"):
        open_study(optuna, url, "s", a, "maximize", 0, config)
