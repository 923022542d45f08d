"""``ftlit tune``: a hyperparameter search over any config key, on Optuna, each trial a real ``ftlit fit``.

Each trial is ``ftlit fit --config <study_dir>/trials/<n>/trial.yaml`` in its own process: the hyperparameters are
drawn once, here, and written into the trial's config, so the ranks of a DDP trial read the same values, and a trial
is exactly what a user reruns by hand. The trial reports its metric after each validation (``TrialReporter``) and
stops when the pruner says so.

The study lives in a database (SQLite in the study folder by default, or any Optuna storage URL), so it survives the
process: ``--n_trials`` is the total in the study, and the same command run again continues to it. A trial whose
worker is gone (Ctrl-C, SIGTERM, kill -9, a lost machine) is marked failed and enqueued again (Optuna's
``RetryHeartbeatStaleTrialCallback``); the retry resumes the interrupted fit from its last checkpoint in the same run
folder. A worker is known to be gone when it ran on this machine and its process has exited, or, from another
machine, when its heartbeat is older than the grace period. Several workers, here or on other machines, can share one
study.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ftlit.commands.folders import arg_docs, command_parser
from ftlit.errors import ConfigError, Stopped, report_errors
from ftlit.run_folder import LOCK_FILE
from ftlit.search import BEST_YAML, PLOTS, STUDY_JSON, TRIALS_CSV
from ftlit.search.reporting import ENV, PRUNED_AT
from ftlit.search.space import Search, config_keys, load_search, set_key
from ftlit.upstream import optuna_trial_id

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

try:
    import fcntl
except ImportError:  # Windows: workers on one machine are not serialized while they draw a trial
    fcntl = None

HEARTBEAT_S = 30  # a worker marks its running trial alive this often
GRACE_S = 120  # a trial not marked alive for this long is taken as lost (its worker on another machine is gone)
MAX_RETRY = 3  # an interrupted trial is resumed up to this many times, then counts as failed
STOP_WAIT_S = 120  # how long a stopped trial may take to save its checkpoint before it is killed


def tune(
    config: list[str],
    search: str,
    n_trials: int,
    study_dir: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    timeout: float | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    seed: int = 0,
) -> None:
    """Search hyperparameters with Optuna: each trial is a real ``ftlit fit`` in its own run folder; writes the best
    trial's config (``best.yaml``, runs with ``ftlit fit --config``), a table of all trials and plots.

    Args:
        config: The base config, as ``ftlit fit --config`` takes it (repeat for overlays: later files win).
        search: The search file: the config keys searched and their ranges, the metric, the sampler and the pruner
            (see configs/search/quickstart.yaml).
        n_trials: Trials in the study in total, with those of earlier runs of this command (finished, pruned or
            failed): a stopped search run again continues to it, resuming the interrupted trial.
        study_dir: The study's folder: its database (SQLite, unless ``storage`` is given), the trials' run folders
            (``trials/<n>``), ``best.yaml``, ``trials.csv`` and the plots (default: ``runs/tune/<search file name>``).
        storage: An Optuna storage URL shared by several workers, on this machine or others (``postgresql://...``,
            ``mysql+pymysql://...``); default: ``sqlite:///<study_dir>/study.db``.
        study_name: The study's name in the storage (default: the search file's name without its extension).
        timeout: Start no new trial after this many seconds (the running one finishes).
        max_epochs: Cap every trial at this many epochs (cheap trials); ``best.yaml`` keeps the cap.
        max_steps: Cap every trial at this many optimizer steps.
        seed: The sampler's seed.
    """
    optuna = _import_optuna()
    for field, value in (("n_trials", n_trials), ("max_epochs", max_epochs), ("max_steps", max_steps)):
        if value is not None and value < 1:
            raise ConfigError(field, f"must be at least 1, got {value}")
    if timeout is not None and not timeout > 0:
        raise ConfigError("timeout", f"must be a positive number of seconds, got {timeout}")
    base = base_config(config)
    plan = load_search(search, set(config_keys(base)))
    metric, direction = objective(plan, base)
    folder = Path(study_dir or Path("runs") / "tune" / Path(search).stem)
    folder.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    caps = {"trainer.max_epochs": max_epochs, "trainer.max_steps": max_steps}
    made_with = "\n".join(Path(f).read_text(encoding="utf-8") for f in config) + f"\n# caps: {caps}"
    with study_lock(folder):  # two workers starting at once would both create the tables
        study, storage = open_study(optuna, url, study_name or Path(search).stem, plan, direction, seed, made_with)
    base = trial_base(base, metric, direction, {k: v for k, v in caps.items() if v is not None})
    worker = Worker(study, storage, plan, base, folder, metric)
    print(f"ftlit tune: study '{study.study_name}' in {folder}: {metric} ({direction}), {n_trials} trials in all")
    try:
        worker.run(n_trials, timeout)
    finally:
        write_outputs(study, folder, metric)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        print(
            f"ftlit tune: best trial {best.number}: {metric} {best.value:.6g}; ftlit fit --config {folder / BEST_YAML}"
        )


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError("tune", "needs Optuna: pip install 'ftlit[tune]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ftlit runs the heartbeat itself around each trial's process, with ask and tell rather than optimize.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def base_config(files: list[str]) -> dict[str, Any]:
    """The resolved ``ftlit fit`` config of ``files`` (every key, defaults included), parsed and checked as
    ``ftlit fit`` does, with nothing built."""
    from ftlit import checks
    from ftlit.cli import ConfigOnly

    if not files:
        raise ConfigError("config", "required: pass --config with the config to tune")
    argv = ["fit", *(arg for name in files for arg in ("--config", name))]
    checks.check_config_files(argv)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")  # given on purpose
        cli = ConfigOnly(args=argv)
    return yaml.safe_load(cli.parser.dump(cli.config, skip_unset=False))["fit"]


def objective(plan: Search, base: dict[str, Any]) -> tuple[str, str]:
    """The metric and direction: the search file's, else the config's ``checkpoint.monitor`` and mode."""
    monitor, mode = base["checkpoint"]["monitor"], base["checkpoint"]["mode"]
    metric = plan.metric or monitor
    if metric is None:
        raise ConfigError("search.metric", "no metric to optimize: set metric (e.g. val/acc) and direction")
    if plan.direction:
        return metric, plan.direction
    if metric != monitor:
        raise ConfigError("search.direction", f"say whether {metric} is to maximize or minimize")
    return metric, "maximize" if mode == "max" else "minimize"


def trial_base(base: dict[str, Any], metric: str, direction: str, caps: dict[str, int]) -> dict[str, Any]:
    """The config every trial starts from: checkpoints and early stopping select on the searched metric."""
    base = copy.deepcopy(base)
    base["checkpoint"].update(monitor=metric, mode="max" if direction == "maximize" else "min")
    for key, value in caps.items():
        set_key(base, key, value)
    if base["trainer"].get("enable_progress_bar") is None:
        base["trainer"]["enable_progress_bar"] = False  # a trial's output goes to its fit.log
    base["ckpt_path"] = None
    return base


def open_study(
    optuna: Any, url: str, name: str, plan: Search, direction: str, seed: int, config: str
) -> tuple[optuna.Study, RDBStorage]:
    """Create or load the study; a study made from another search file or config (``config``: the config files'
    text and the trial caps) is refused, not mixed in. The files are compared as written, not as resolved: an
    ftlit upgrade that adds a key with its default does not orphan a study."""
    from optuna.storages import RDBStorage

    try:
        storage = RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=retry_callback(),
        )
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's errors vary by driver; each is the same bad input
        raise ConfigError("storage", f"cannot open '{url}': {' '.join(str(err).split())[:200]}") from None
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=direction,
            sampler=plan.make_sampler(seed),
            pruner=plan.make_pruner(),
            load_if_exists=True,
        )
    except ValueError as err:
        raise ConfigError("study_name", f"'{name}': {err}: give another study_name or study_dir") from None
    if list(study.directions) != [getattr(optuna.study.StudyDirection, direction.upper())]:
        raise ConfigError("search.direction", f"study '{name}' was made to {study.direction.name.lower()}")
    made_with = {"search": plan.text, "config": config}
    for what, text in made_with.items():
        before = study.user_attrs.get(what)
        if before is None:
            study.set_user_attr(what, text)
        elif before != text:
            raise ConfigError(
                what if what == "search" else "config",
                f"study '{name}' was made with another {what}: run it with the same files, or give a new study_dir",
            )
    for params in plan.enqueue:
        study.enqueue_trial(params, skip_if_exists=True)
    return study, storage


class Worker:
    """Runs trials of one study until it holds ``n_trials``: draws a trial, runs ``ftlit fit`` on it, records it."""

    def __init__(
        self, study: optuna.Study, storage: RDBStorage, plan: Search, base: dict[str, Any], folder: Path, metric: str
    ) -> None:
        self.study, self.storage, self.plan, self.base, self.folder = study, storage, plan, base, folder
        self.metric = metric
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.child: subprocess.Popen | None = None

    def run(self, n_trials: int, timeout: float | None) -> None:
        start = time.monotonic()
        previous = signal.signal(signal.SIGTERM, _raise_stop)
        try:
            while timeout is None or time.monotonic() - start < timeout:
                trial = self.next_trial(n_trials)
                if trial is None:
                    return
                self.run_trial(trial)
        finally:
            signal.signal(signal.SIGTERM, previous)

    def next_trial(self, n_trials: int) -> optuna.Trial | None:
        """The next trial to run, or None when the study holds ``n_trials`` (counted under a lock, so two workers
        on this machine never both take the last one)."""
        import optuna

        with study_lock(self.folder):
            release_lost_trials(self.study, self.storage, self.host)
            optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False)
            if counted(trials) >= n_trials:
                return None
            trial = self.study.ask()
            self.storage.record_heartbeat(optuna_trial_id(trial))
            trial.set_user_attr("worker", {"host": self.host, "pid": self.pid})
        return trial

    def run_trial(self, trial: optuna.Trial) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        frozen = find_trial(self.study, trial.number)
        history = RetryHeartbeatStaleTrialCallback.retry_history(frozen)
        root = self.folder / "trials" / str(history[0] if history else trial.number)
        params = self.plan.draw(trial)
        config = copy.deepcopy(self.base)
        for key, value in params.items():
            set_key(config, key, value)
        config["trainer"]["default_root_dir"] = str(root)
        root.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(config, sort_keys=False)
        write_text(root / "trial.yaml", trial_header(self.study, trial.number) + text)
        # Also in the study: a worker on another machine writes best.yaml from the database alone.
        trial.set_user_attr("run_folder", str(root))
        trial.set_user_attr("config", text)
        resume = bool(history) and (root / "checkpoints" / "last.ckpt").is_file()
        args = ["fit", "--config", str(root / "trial.yaml")]
        args += ["--ckpt_path", "last"] if resume else ["--overwrite", "true"]
        what = f"resumes trial {history[-1]}" if resume else "starts"
        print(f"ftlit tune: trial {trial.number} {what}: {describe(params)}", flush=True)
        wait_for_folder(root)
        started = time.monotonic()
        try:
            code = self.run_fit(trial, args, root)
        except (KeyboardInterrupt, Stopped) as stop:
            self.interrupt(trial)
            signum = stop.code - 128 if isinstance(stop, Stopped) else signal.SIGINT
            raise Stopped(
                signum,
                f"search stopped in trial {trial.number}, saved: run the same command again to continue",
            ) from None
        seconds = time.monotonic() - started + float(frozen.user_attrs.get("seconds", 0.0))
        trial.set_user_attr("seconds", round(seconds, 1))
        state, value, reason = self.outcome(trial.number, code, root, params)
        if reason:
            trial.set_user_attr("reason", reason)
        if state is TrialState.COMPLETE:
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=state)
        shown = f"{self.metric} {value:.6g}" if value is not None else reason
        print(f"ftlit tune: trial {trial.number} {state.name.lower()} ({seconds:.0f} s): {shown}", flush=True)
        if state is TrialState.FAIL and code == 2 and not caused_by(reason or "", params):
            raise ConfigError(
                "config", f"trial {trial.number} failed on the config itself, not a searched key: {reason}"
            )

    def run_fit(self, trial: optuna.Trial, args: list[str], root: Path) -> int:
        """``ftlit fit`` for ``trial`` in a new process, its output appended to ``<root>/fit.log``; the trial is
        marked alive while it runs."""
        env = {
            **os.environ,
            ENV: json.dumps(
                {
                    "storage": self.storage.url,
                    "study": self.study.study_name,
                    "trial_id": optuna_trial_id(trial),
                    "number": trial.number,
                    "metric": self.metric,
                    "pruner": self.plan.pruner,
                }
            ),
        }
        with open(root / "fit.log", "a", encoding="utf-8") as log:
            log.write(f"\n$ ftlit {shlex.join(args)}\n")
            log.flush()
            self.child = subprocess.Popen(
                [sys.executable, "-m", "ftlit", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_stop_with_parent if sys.platform == "linux" else None,
            )
            try:
                while True:
                    try:
                        return self.child.wait(timeout=HEARTBEAT_S)
                    except subprocess.TimeoutExpired:
                        self.storage.record_heartbeat(optuna_trial_id(trial))
            finally:
                self.stop_child()

    def stop_child(self) -> None:
        """Stop the running fit as a scheduler would (SIGTERM: it saves a checkpoint), killing it if it hangs."""
        child, self.child = self.child, None
        if child is None or child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def interrupt(self, trial: optuna.Trial) -> None:
        """Mark ``trial`` failed and enqueue its retry, which resumes it from its last checkpoint."""
        from optuna.trial import TrialState

        trial.set_user_attr("reason", "interrupted")
        self.study.tell(trial, state=TrialState.FAIL)
        retry_callback()(self.study, find_trial(self.study, trial.number))

    def outcome(self, number: int, code: int, root: Path, params: dict[str, Any]) -> tuple[Any, float | None, str]:
        """The trial's state, value and, when it did not complete, the reason."""
        from optuna.trial import TrialState

        frozen = find_trial(self.study, number)
        if code != 0:
            return TrialState.FAIL, None, failure(code, root / "fit.log")
        if PRUNED_AT in frozen.user_attrs:
            return TrialState.PRUNED, None, f"pruned at step {frozen.user_attrs[PRUNED_AT]}"
        values = [v for v in frozen.intermediate_values.values() if math.isfinite(v)]
        if not values:
            seen = list(frozen.intermediate_values.values())
            return TrialState.FAIL, None, f"{self.metric} was {seen[-1]}" if seen else f"no {self.metric} was logged"
        best = max(values) if self.study.direction.name == "MAXIMIZE" else min(values)
        return TrialState.COMPLETE, best, ""


def _raise_stop(signum: int, frame: Any) -> None:
    raise Stopped(signum, "stopped")


def _stop_with_parent() -> None:
    """In the trial's process (Linux): receive SIGTERM when the tune process dies, even by kill -9, so the fit saves
    its checkpoint and exits instead of running on unwatched."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Serialize drawing trials among the workers that share ``folder`` on this machine."""
    if fcntl is None:
        yield
        return
    with open(folder / ".tune.lock", "a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def wait_for_folder(root: Path, limit: float = STOP_WAIT_S) -> None:
    """Wait until no fit holds ``root`` (the interrupted fit of a retried trial may still be saving)."""
    lock = root / LOCK_FILE
    if fcntl is None or not lock.exists():
        return
    deadline = time.monotonic() + limit
    with open(lock, "a") as file:
        while True:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return  # the fit reports the folder in use, and the trial fails with that reason
                time.sleep(1)


def release_lost_trials(study: optuna.Study, storage: RDBStorage, host: str) -> None:
    """Fail (and so retry) the running trials of workers on this machine whose process has exited: their heartbeat
    would take the grace period to go stale."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        if worker.get("host") == host and not pid_alive(int(worker.get("pid", 0))):
            storage.set_trial_user_attr(optuna_trial_id(trial), "reason", "interrupted (its worker exited)")
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            retry_callback()(study, find_trial(study, trial.number))


def retry_callback() -> Any:
    """Enqueue a lost trial again with its parameters, its time so far and the steps it reported."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def counted(trials: list[FrozenTrial]) -> int:
    """Trials toward ``n_trials``: all that ran or run, except an interrupted one that is retried (its retry
    counts) and the waiting ones (they count once they run)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    retried = {RetryHeartbeatStaleTrialCallback.retried_trial_number(t) for t in trials}
    return sum(1 for t in trials if t.state.name != "WAITING" and not (t.state.name == "FAIL" and t.number in retried))


def find_trial(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def failure(code: int, log: Path) -> str:
    """Why a trial's fit failed: its last ``ftlit:`` line (a bad value, a non-finite loss), or how it ended."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.is_file() else []
    said = next((line for line in reversed(lines) if line.startswith("ftlit:")), None)
    if said:
        return said.removeprefix("ftlit: ").removeprefix("error: ")
    if code < 0:
        return f"killed by {signal.Signals(-code).name}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
    return f"exit code {code}, see {log}"


def caused_by(reason: str, params: dict[str, Any]) -> bool:
    """Whether a config error names a searched key (``model.x`` or ``model.init_args.x``): then it is the trial's
    values that are wrong, and the search goes on."""
    field = reason.split(":", 1)[0].replace(".init_args.", ".")
    return any(
        field == key.replace(".init_args.", ".") or field.endswith("." + key.rsplit(".", 1)[-1]) for key in params
    )


def describe(params: dict[str, Any]) -> str:
    return ", ".join(f"{key.replace('.init_args.', '.')}={value!r}" for key, value in params.items()) or "(defaults)"


def trial_header(study: optuna.Study, number: int) -> str:
    return (
        f"# Trial {number} of study '{study.study_name}' (ftlit tune). Rerun it by hand in a new folder:\n"
        "#   ftlit fit --config <this file> --trainer.default_root_dir <folder>\n"
    )


def write_text(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (a kill leaves the old file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


STATES = ("complete", "pruned", "fail", "running", "waiting")


def write_outputs(study: optuna.Study, folder: Path, metric: str) -> None:
    """``trials.csv`` (every trial: state, value, time, parameters, reason), ``best.yaml`` and the plots."""
    trials = study.get_trials(deepcopy=False)
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", metric, "seconds", *keys, "reason", "run_folder"])
    for t in trials:
        row = [t.number, t.state.name.lower(), "" if t.value is None else t.value, t.user_attrs.get("seconds", "")]
        row += [t.params.get(k, "") for k in keys]
        reason = t.user_attrs.get("reason", "") if t.state.name in ("FAIL", "PRUNED") else ""
        writer.writerow([*row, reason, t.user_attrs.get("run_folder", "")])
    write_text(folder / TRIALS_CSV, out.getvalue())
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    summary = {
        "format": 1,
        "study": study.study_name,
        "metric": metric,
        "direction": study.direction.name.lower(),
        "trials": {state: sum(t.state.name.lower() == state for t in trials) for state in STATES},
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "folder": Path(best.user_attrs["run_folder"]).name,  # under <study_dir>/trials
        },
    }
    write_text(folder / STUDY_JSON, json.dumps(summary, indent=1) + "\n")
    if best is None:
        return
    config = yaml.safe_load(best.user_attrs["config"])
    config["trainer"]["default_root_dir"] = str(folder / "best")
    header = (
        f"# The best trial ({best.number}) of study '{study.study_name}': {metric} {best.value:.6g}.\n"
        f"# Train it again: ftlit fit --config {folder / BEST_YAML}\n"
    )
    write_text(folder / BEST_YAML, header + yaml.safe_dump(config, sort_keys=False))
    write_plots(study, folder, len(complete))


def write_plots(study: optuna.Study, folder: Path, complete: int) -> None:
    """The optimisation history and the parameter importances as PNGs (the ``plots`` extra; importances need two
    finished trials)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_plots
    except ImportError:
        print("ftlit tune: no plots: pip install 'ftlit[plots]'", file=sys.stderr)
        return
    for name, function in PLOTS.items():
        if name == "importances.png" and complete < 2:
            continue
        try:
            axes = getattr(optuna_plots, function)(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances when no parameter varied
            print(f"ftlit tune: no {name}: {err}", file=sys.stderr)
            continue
        figure = axes.figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        tmp = folder / f".{name}.tmp-{os.getpid()}.png"
        figure.savefig(tmp, dpi=100)
        os.replace(tmp, folder / name)
        plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    """``ftlit tune --config x.yaml --search s.yaml --n_trials N``; bad input exits with one line naming the field."""

    def run() -> None:
        parser = command_parser(tune, "ftlit tune", skip=("config",))
        parser.add_argument("--config", action="append", required=True, help=arg_docs(tune)["config"])
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        tune(**{k: v for k, v in vars(args).items() if not k.startswith("_")})

    report_errors(run)
