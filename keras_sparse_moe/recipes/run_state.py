"""The state of a recipe's output directory: fresh, interrupted, trained or
finished.

Every recipe writes `run.json` (`{"status": "running" | "trained" |
"finished", "settings": {...}, "stages": {...}}`) into its output directory
before training, when `fit` has ended and the trained model is saved
(`"trained"`), after each later stage (evaluation, preset, ...) and when it
finishes. Calling the recipe again with the same directory then

- continues an interrupted run (`"resume"`: its `backup/` holds the last
  committed epoch) when the settings that shape training are unchanged;
- completes a run interrupted after `fit` (`"trained"`: `model.keras` holds
  the trained model) without training again: only the stages that
  `run.json` does not record as done are run;
- returns the finished run's `metrics.json` without training (`"finished"`);
- refuses different settings with a `ValueError` that lists them, instead of
  mixing two runs' checkpoints and logs, unless `overwrite=True` deletes the
  earlier run's files first (and only those).
"""

import os
import shutil

from keras_sparse_moe.utils.io import read_json
from keras_sparse_moe.utils.io import write_json

# The files a training recipe writes into its output directory.
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
PRESET_DIR = "preset"
LOG_FILE = "log.csv"
BEST_FILE = "best.keras"
LAST_FILE = "last.keras"
BACKUP_DIR = "backup"
CURVES_FILE = "training_curves.png"
HEATMAP_FILE = "routing_heatmap.png"
RUN_ARTIFACTS = (
    RUN_FILE, METRICS_FILE, MODEL_FILE, PRESET_DIR, LOG_FILE, BEST_FILE, LAST_FILE, BACKUP_DIR,
    CURVES_FILE, HEATMAP_FILE,
)
"""A run's own files (and directories): `overwrite` deletes these, nothing else."""


def clear_run(output_dir):
    """Delete a run's own files and directories (`RUN_ARTIFACTS`) from
    `output_dir`; anything else there is left alone.

    Example:
    >>> import os, tempfile
    >>> directory = tempfile.mkdtemp()
    >>> for name in ("log.csv", "notes.txt"):
    ...     _ = open(os.path.join(directory, name), "w").write("x")
    >>> clear_run(directory)
    >>> os.listdir(directory)
    ['notes.txt']
    """
    for name in RUN_ARTIFACTS:
        path = os.path.join(output_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def check_previous_run(output_dir, settings, *, keys, overwrite=False, defaults=None):
    """`"fresh"`, `"resume"` or `"finished"` for a run with `settings` in
    `output_dir`.

    Args:
        output_dir: the run's output directory (may not exist yet).
        settings: dict of this call's settings.
        keys: the settings that must match to resume or to reuse a finished run.
        overwrite: delete an earlier run's files (`RUN_ARTIFACTS`) and start afresh.
        defaults: values of `keys` that older `run.json` files do not record.

    Raises:
        ValueError: the directory holds a run with different settings.

    Example:
    >>> import tempfile
    >>> check_previous_run(tempfile.mkdtemp(), {"epochs": 3}, keys=("epochs",))
    'fresh'
    """
    if overwrite:
        clear_run(output_dir)
        return "fresh"
    previous = read_json(os.path.join(output_dir, RUN_FILE))
    backup = os.path.isdir(os.path.join(output_dir, BACKUP_DIR))
    if not isinstance(previous, dict):
        return "resume" if backup else "fresh"
    old = previous.get("settings") or {}
    old = {k: old.get(k, (defaults or {}).get(k)) for k in keys}
    changed = sorted(k for k in keys if old[k] != settings.get(k))
    status = previous.get("status")
    if changed:
        what = "a finished" if status == "finished" else "an interrupted"
        raise ValueError(
            f"Output directory {output_dir!r} holds {what} run with different settings "
            f"({', '.join(f'{k}: {old[k]!r} -> {settings.get(k)!r}' for k in changed)}). "
            "Use another output directory, or overwrite=True (--overwrite) to start afresh."
        )
    if status == "finished" and os.path.isfile(os.path.join(output_dir, METRICS_FILE)):
        return "finished"
    if (status == "trained" and isinstance(previous.get("stages"), dict)
            and "fit" in previous["stages"] and os.path.isfile(os.path.join(output_dir, MODEL_FILE))):
        return "trained"
    return "resume" if backup else "fresh"


def completed_stages(output_dir):
    """The stages `run.json` in `output_dir` records as done: a dict
    `{stage: its results}` (empty for a fresh run).

    Example:
    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> record_stage(directory, {"epochs": 1}, "fit", {"epochs_run": 1}, status="trained")
    >>> completed_stages(directory)
    {'fit': {'epochs_run': 1}}
    """
    previous = read_json(os.path.join(output_dir, RUN_FILE))
    stages = previous.get("stages") if isinstance(previous, dict) else None
    return dict(stages) if isinstance(stages, dict) else {}


def record_stage(output_dir, settings, stage, results=True, status=None):
    """Record in `run.json` that `stage` is done, with its `results` (a JSON
    value a resumed run reuses instead of running the stage again);
    `status` replaces the run's status when given."""
    previous = read_json(os.path.join(output_dir, RUN_FILE))
    previous = previous if isinstance(previous, dict) else {}
    stages = completed_stages(output_dir)
    stages[stage] = results
    write_json(os.path.join(output_dir, RUN_FILE), {
        "status": status or previous.get("status", "running"),
        "settings": settings,
        "stages": stages,
    })

