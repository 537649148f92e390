"""The study behind `ptrain sweep`, in Optuna's RDB storage: SQLite in SWEEP_DIR (nothing to
start), or --storage's PostgreSQL, which workers on many machines join.

- The count and the ask are one step under a lock (a thread lock, a file lock on SWEEP_DIR, and
  on PostgreSQL an advisory lock), so --trials is exact however many workers ask.
- Each worker's running trials send a heartbeat. A trial silent for two heartbeats lost its
  worker (SIGKILL, a dead machine): the next ask fails it and enqueues its settings again, to
  continue its run directory from last.pt where that folder is at hand.
- A trial continued by another (interrupted, or lost) is not counted twice.
- The folder records the study's name and --storage (without its password), for --show.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import warnings
from pathlib import Path

from pytorch_cli.platform import files
from pytorch_cli.platform.errors import UsageError, first_line
from pytorch_cli.store.choosing import STORED, STUDY_DB, STUDY_NAME

EXTRA = "pip install 'pytorch-cli[sweep]'"  # Optuna, and psycopg for postgresql://
DRIVERS = {"MySQLdb": "mysqlclient", "pymysql": "PyMySQL"}  # module -> its package on PyPI
# the study's files in its folder (store/choosing.py, which never lets a run into it): the
# default SQLite study, the study's name (for --show), where --storage put it (for --show and
# the same command again)


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError(f"ptrain sweep needs optuna: {EXTRA}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and fail_stale_trials are marked experimental (since Optuna 2.9)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # ask-and-tell sends its own heartbeats (beat, below): Optuna's warning is for optimize()
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
    return optuna


def storage_url(plan) -> str:
    """--storage, else where this folder's sweep put its study, else SQLite in the folder."""
    saved = plan.folder / STORED
    return plan.storage or (saved.read_text().strip() if saved.is_file() else "") \
        or f"sqlite:///{(plan.folder / STUDY_DB).resolve()}"


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url
    try:
        parsed = make_url(url)
    except Exception:  # not a URL: storage() says so
        return None
    database = parsed.database or ""
    return Path(database) if parsed.drivername.startswith("sqlite") and database \
        and database != ":memory:" else None


def _in_memory(url: str) -> bool:
    from sqlalchemy.engine import make_url
    try:
        parsed = make_url(url)
    except Exception:  # not a URL: storage() says so
        return False
    return parsed.drivername.startswith("sqlite") and parsed.database in (None, "", ":memory:")


def load(plan, name: str):
    """The study for a read-only command (--show, --plot): one line where there is none, and
    no file made (opening a SQLite URL creates its file)."""
    optuna = import_optuna()
    url = storage_url(plan)
    file = _sqlite_file(url)
    if file is not None and file.is_file() and not file.stat().st_size:  # (opening it would
        raise UsageError(f"{plan.folder}: {file.name} is empty: it holds no study")  # write)
    if file is not None and not file.is_file():
        if not plan.storage and not (plan.folder / STORED).is_file():
            raise UsageError(f"{plan.folder} holds no study (no {STUDY_DB}): for a sweep run "
                             "with --storage, give that --storage (and its --study)")
        raise UsageError(f"{plan.folder}: the study's storage {_shown(url)} is not there")
    try:
        return optuna.load_study(study_name=name, storage=storage(plan))
    except KeyError:  # Optuna's 'Record does not exist.'
        raise UsageError(f"{plan.folder}: there is no study {name!r} in {_shown(url)}: give the "
                         "sweep's --study") from None


def study_name(plan) -> str:
    """--study, else the name this folder's sweep used, else the folder's name."""
    saved = plan.folder / STUDY_NAME
    return plan.study or (saved.read_text().strip() if saved.is_file() else "") \
        or plan.folder.resolve().name


def shown_storage(plan) -> str:
    """Where the plan's study is, as a line may say it (no password)."""
    return _shown(storage_url(plan))


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say it as given
        return url


def _driver(url: str) -> str:
    """postgresql:// with psycopg 3, the extra's driver (SQLAlchemy before 2.1 assumes
    psycopg2 for a bare postgresql://)."""
    return "postgresql+psycopg://" + url[len("postgresql://"):] \
        if url.startswith("postgresql://") else url


def storage(plan):
    """Optuna's RDB storage of the plan, with the heartbeat on; errors as one line."""
    optuna = import_optuna()
    import sqlalchemy.exc
    url = storage_url(plan)
    if _in_memory(url):  # each trial's process would have a study of its own, never told
        raise UsageError(f"--storage {_shown(url)} is an in-memory database, which the trials' "
                         "processes cannot share: name a file (sqlite:///study.db) or a server")
    try:
        with _schema_lock(_driver(url)):
            return optuna.storages.RDBStorage(_driver(url), heartbeat_interval=plan.heartbeat,
                                              heartbeat_stale_trial_callback=_lost,
                                              engine_kwargs={"pool_pre_ping": True})
    except ImportError as e:  # the database's driver: psycopg for postgresql://
        name = getattr(e.__cause__, "name", None) or "its driver"
        extra = EXTRA if url.startswith("postgresql") else f"pip install {DRIVERS.get(name, name)}"
        raise UsageError(f"--storage {_shown(url)} needs the module {name}: {extra}") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
        raise UsageError(f"cannot open the study storage {_shown(url)}: "
                         f"{first_line(getattr(e, 'orig', None) or e)}") from None


@contextlib.contextmanager
def _schema_lock(url: str):
    """Workers started at once (a SLURM array) would all create Optuna's tables in one
    PostgreSQL database, and all but one fail on the duplicate: one at a time."""
    if not url.startswith("postgresql"):
        yield
        return
    import sqlalchemy
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with _advisory_lock(engine, "ptrain sweep: Optuna's tables"):
            yield
    finally:
        engine.dispose()


def continue_later(study, params: dict, run_dir: str, number: int) -> None:
    """Enqueue a stopped trial's settings again; its successor continues run_dir."""
    study.enqueue_trial(params, user_attrs={"resume": run_dir, "continues": number})


def _lost(study, trial) -> None:
    """fail_stale_trials' callback: the trial's worker stopped beating."""
    continue_later(study, trial.params, trial.user_attrs.get("run_dir", ""), trial.number)


def continued(trials) -> dict[int, int]:
    """{trial number: the number of the trial that continues it}."""
    return {t.user_attrs["continues"]: t.number for t in trials if "continues" in t.user_attrs}


def counted(study) -> int:
    """Trials that count toward --trials: all but those waiting in the queue and those another
    trial continues."""
    import optuna
    trials = study.get_trials(deepcopy=False)
    again = continued(trials)
    return sum(1 for t in trials
               if t.state != optuna.trial.TrialState.WAITING and t.number not in again)


def running(study) -> bool:
    import optuna
    return any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))


def beat(study, trial) -> None:
    """A heartbeat for a trial this worker runs (what Optuna's own optimize loop sends from a
    thread; ask-and-tell sends its own)."""
    study._storage.record_heartbeat(trial._trial_id)


@contextlib.contextmanager
def asking(sweep):
    """One asker at a time, in this process, on this folder, and on the database, with the
    trials of lost workers failed and enqueued again first."""
    import optuna
    with sweep.lock, open(sweep.plan.folder / ".ask.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with _database_lock(sweep.study):
            optuna.storages.fail_stale_trials(sweep.study)
            yield


@contextlib.contextmanager
def _database_lock(study):
    """A PostgreSQL advisory lock keyed by the study's name: workers on other machines wait.
    (SQLite is on one machine, where the file lock already serialises the askers.)"""
    engine = getattr(getattr(study._storage, "_backend", None), "engine", None)
    if engine is None or engine.dialect.name != "postgresql":
        yield
        return
    with _advisory_lock(engine, study.study_name):
        yield


@contextlib.contextmanager
def _advisory_lock(engine, name: str):
    """PostgreSQL's session-level advisory lock on a 64-bit key derived from name."""
    import sqlalchemy
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})


def remember(plan, name: str) -> None:
    """The study's name, and where --storage put it, in the folder: --show and the same
    command again find it by themselves."""
    path: Path = plan.folder / STUDY_NAME
    if not path.is_file():
        path.write_text(name + "\n")
    stored, url = plan.folder / STORED, _recorded(plan.storage) if plan.storage else ""
    if url and (stored.read_text().strip() if stored.is_file() else "") != url:  # the latest
        files.atomic_write(stored, lambda f: f.write(f"{url}\n".encode()))


def _recorded(url: str) -> str:
    """The URL without its password (libpq finds that in ~/.pgpass or PGPASSWORD: a file in a
    run folder is no place for one), a relative SQLite path made absolute."""
    from sqlalchemy.engine import make_url
    try:
        parsed = make_url(url)
    except Exception:  # storage() opened it: it is one
        return url
    file = _sqlite_file(url)
    if file is not None:
        parsed = parsed.set(database=str(file.resolve()))
    return parsed.set(password=None).render_as_string(hide_password=False)
