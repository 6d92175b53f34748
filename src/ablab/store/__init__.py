"""The results store of one study directory: SQLite plus per-run artifact files.

Layout::

    results/<study>/ablab.db          studies, runs (status, resolved spec, code version), metrics,
                                       artifacts (run, name, kind, epoch, split, size, sha256)
    results/<study>/runs/<id>/...      artifact files (checkpoints, predictions, probe series)
    results/<study>/.staging/<id>/     where workers write a run's artifact files before it is stored
    results/<study>/report/            written by ``ablab report``

``database`` (schema, connections, the writer's transactions: ``Store``), ``reader`` (the read
API: ``StoreReader``), ``layout`` (where each file lies), ``lock`` (one writer per directory),
``errors`` (disk and database failures as one message). Artifact names and formats are
``ablab.artifacts``; atomic writes ``ablab.files``. Nothing here imports the training code.
"""

from ablab.files import remove_stale_temp_files, write_atomic
from ablab.store.database import Store, code_version
from ablab.store.layout import DB_NAME, STAGING, require_results_path
from ablab.store.lock import LOCK_NAME, StudyLock, close_inherited_locks
from ablab.store.reader import FINAL, StoreReader, with_run_columns

__all__ = [
    "DB_NAME", "FINAL", "LOCK_NAME", "STAGING", "Store", "StoreReader", "StudyLock", "close_inherited_locks",
    "code_version", "remove_stale_temp_files", "require_results_path", "with_run_columns", "write_atomic",
]
