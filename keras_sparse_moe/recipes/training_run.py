"""`TrainingRun`: the life of a recipe's run in its output directory, from
the check of the previous run there to the final `metrics.json` (the states
and files of `run_state`), around the recipe's own model, data, loss and
evaluation."""

import os
import shutil
import time

import keras

from keras_sparse_moe.recipes.checkpoints import committed_epoch
from keras_sparse_moe.recipes.run_state import BACKUP_DIR
from keras_sparse_moe.recipes.run_state import METRICS_FILE
from keras_sparse_moe.recipes.run_state import MODEL_FILE
from keras_sparse_moe.recipes.run_state import PRESET_DIR
from keras_sparse_moe.recipes.run_state import RUN_FILE
from keras_sparse_moe.recipes.run_state import check_previous_run
from keras_sparse_moe.recipes.run_state import completed_stages
from keras_sparse_moe.recipes.run_state import record_stage
from keras_sparse_moe.recipes.training import build_optimizer
from keras_sparse_moe.recipes.training import make_callbacks
from keras_sparse_moe.utils.io import atomic_save_model
from keras_sparse_moe.utils.io import check_keras_archive
from keras_sparse_moe.utils.io import check_writable_directory
from keras_sparse_moe.utils.io import read_json
from keras_sparse_moe.utils.io import write_json


class TrainingRun:
    """The run of a recipe with `settings` and `config` in `output_dir`.

    Creating it checks that `output_dir` is writable and what it holds
    (`state`: `"fresh"`, `"resume"`, `"trained"` or `"finished"`, as
    `run_state` describes; `stages`: the results a trained run recorded),
    and seeds the run unless it is finished (`config.seed`; deterministic
    kernels if `config.deterministic`). Training stops with a
    `NonFiniteLossError` naming the epoch and step when the loss becomes
    NaN or infinite.

    Args:
        output_dir: str, the run's output directory.
        settings: dict of the run's settings, recorded in `run.json`.
        config: the run's `TrainingConfig`.
        keys: the settings that must match to resume or reuse a run.
        logger: the recipe's `logging.Logger`.
        overwrite: bool, delete an earlier run's files and start afresh.
        defaults: values of `keys` that older `run.json` files do not record.
        save: bool, commit the trained model and record the stages; False
            trains every time and records only the final status.

    Example:
    >>> import logging, tempfile
    >>> from keras_sparse_moe.recipes.config import TrainingConfig
    >>> run = TrainingRun(tempfile.mkdtemp(), {"epochs": 1}, TrainingConfig(epochs=1),
    ...                   keys=("epochs",), logger=logging.getLogger("example"))
    >>> run.state, run.stages
    ('fresh', {})
    """

    def __init__(self, output_dir, settings, config, *, keys, logger, overwrite=False,
                 defaults=None, save=True):
        if not isinstance(output_dir, (str, os.PathLike)) or not os.fspath(output_dir):
            raise ValueError(
                f"Argument `output_dir` must be a directory path; received {output_dir!r}."
            )
        output_dir = check_writable_directory(output_dir)
        self.output_dir = output_dir
        self.settings = settings
        self.config = config
        self.logger = logger
        self.save = bool(save)
        self.model_file = os.path.join(output_dir, MODEL_FILE)
        self.state = check_previous_run(output_dir, settings, keys=keys, overwrite=overwrite,
                                        defaults=defaults)
        self.stages = completed_stages(output_dir) if self.state == "trained" and save else {}
        if self.state != "finished":
            if config.deterministic:
                from keras_sparse_moe.utils.determinism import enable_deterministic_ops

                enable_deterministic_ops()
            keras.utils.set_random_seed(config.seed)

    def previous_metrics(self):
        """The `metrics.json` of the finished run."""
        self.logger.info(
            "%s already holds a finished run with these settings; returning its metrics "
            "(pass overwrite=True / --overwrite to train again).", self.output_dir,
        )
        return read_json(os.path.join(self.output_dir, METRICS_FILE))

    def resumed_from_epoch(self):
        """Epochs the interrupted run committed (0 unless it resumes)."""
        if self.state != "resume":
            return 0
        return committed_epoch(os.path.join(self.output_dir, BACKUP_DIR))

    def limit(self, *datasets):
        """`datasets` cut to the config's `max_batches` (None stays None)."""
        limit = self.config.max_batches
        return tuple(ds if ds is None or limit is None else ds.take(limit) for ds in datasets)

    def steps_per_epoch(self, train, examples):
        """Optimizer steps of an epoch over the batched `train` data holding
        `examples` examples (None: count its batches), at most `max_batches`."""
        if examples is None:
            steps = int(train.cardinality())
            steps = steps if steps >= 0 else sum(1 for _ in train)
        else:
            steps = examples // self.config.batch_size
        if self.config.max_batches is not None:
            steps = min(steps, self.config.max_batches)
        return max(1, steps)

    def compile(self, model, steps_per_epoch, no_decay, **options):
        """Compile `model` with the config's optimizer over its epochs of
        `steps_per_epoch` steps (`no_decay`: variable-name fragments kept
        out of weight decay) and the `keras.Model.compile` `options`, and
        build the optimizer."""
        total_steps = steps_per_epoch * self.config.epochs
        model.compile(optimizer=self.config.make_optimizer(total_steps, no_decay=no_decay),
                      **options)
        build_optimizer(model)

    def train(self, model, fit):
        """The results of the `fit` stage. A trained run's are those it
        recorded, after its trained weights and optimizer state are loaded
        into `model` (compiled like the saved model). Otherwise `fit()`
        trains `model` and returns them; then comes the commit point: the
        trained model is saved and the stage recorded, so that a re-run
        completes the run without training."""
        if "fit" not in self.stages:
            results = fit()
            if self.save:
                atomic_save_model(model, self.model_file)
                record_stage(self.output_dir, self.settings, "fit", results, status="trained")
                shutil.rmtree(os.path.join(self.output_dir, BACKUP_DIR), ignore_errors=True)
            return results
        self.logger.info("%s holds a run whose training has finished; completing it without "
                         "training again.", self.output_dir)
        check_keras_archive(self.model_file)
        build_optimizer(model)  # its state is loaded too
        try:
            model.load_weights(self.model_file)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(
                f"Cannot load the trained model {self.model_file!r} ({error}); delete it, or pass "
                "overwrite=True (--overwrite) to train again."
            ) from None
        return self.stages["fit"]

    def fit(self, model, train, validation, *, callbacks=(), first_callbacks=(), **options):
        """Mark the run running and train `model` for the config's epochs.

        Args:
            model: the compiled model.
            train: the training data.
            validation: None or the validation data (`val_loss` is then
                monitored, else `loss`).
            callbacks: Keras callbacks after those of `make_callbacks`.
            first_callbacks: Keras callbacks before them.
            **options: more `keras.Model.fit` arguments (`shuffle` is False
                unless given: the recipes' `tf.data` pipelines shuffle
                themselves, seeded).

        Returns:
            `(history, seconds)`.
        """
        fit_callbacks = list(first_callbacks) + make_callbacks(
            self.output_dir, early_stopping_patience=self.config.early_stopping_patience,
            monitor="loss" if validation is None else "val_loss", extra=list(callbacks),
            keep_backup=self.save, terminate_on_nan=True,
        )
        write_json(os.path.join(self.output_dir, RUN_FILE),
                   {"status": "running", "settings": self.settings})
        start = time.time()
        options.setdefault("shuffle", False)  # (Keras warns that tf.data ignores it)
        history = model.fit(train, validation_data=validation, epochs=self.config.epochs,
                            callbacks=fit_callbacks, **options)
        return history, time.time() - start

    def stage(self, name, compute):
        """The results of stage `name`: those recorded by a trained run that
        did it, else `compute()`'s, recorded."""
        if name in self.stages:
            return self.stages[name]
        results = compute()
        if self.save:
            record_stage(self.output_dir, self.settings, name, results)
        return results

    def save_preset(self, model):
        """Write `output_dir/preset/` unless a trained run did; its path."""
        path = os.path.join(self.output_dir, PRESET_DIR)
        if "preset" not in self.stages or not os.path.isdir(path):
            from keras_sparse_moe.presets import save_to_preset

            save_to_preset(model, path)
            record_stage(self.output_dir, self.settings, "preset")
        return path

    def finish(self, metrics):
        """Write `metrics.json` and mark the run finished."""
        write_json(os.path.join(self.output_dir, METRICS_FILE), metrics)
        if self.save:
            record_stage(self.output_dir, self.settings, "metrics", status="finished")
        else:
            write_json(os.path.join(self.output_dir, RUN_FILE),
                       {"status": "finished", "settings": self.settings})
