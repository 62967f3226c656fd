"""Restoring a task's compile settings when a `.keras` file is loaded.

Keras calls `Model.compile_from_config(config)` with the serialized
arguments of the last `compile()` call. A task whose `compile()` has
defaults of its own (`"auto"` optimizer, loss and metrics) must override it,
or Keras skips compiling with a warning and then cannot restore the saved
optimizer state ("Skipping variable loading for optimizer ..."). The
optimizer must also be built exactly when it was built at saving time (a
compiled but never trained model saves an unbuilt optimizer), which the
compile config records.
"""

import keras

_OPTIMIZER_BUILT = "optimizer_built"


class CompileConfigMixin:
    """Mixin for tasks with a custom `compile()`: `.keras` files restore the
    compile settings and the optimizer state without warnings.

    Put it before the Keras model class in the bases. `get_compile_config()`
    adds whether the optimizer was built; `compile_from_config()` calls
    `compile()` with the saved arguments and builds the optimizer if it was
    (files without the flag: built, as Keras does).

    Example:
    >>> import os, tempfile, keras
    >>> @keras.saving.register_keras_serializable(package="docs")
    ... class Regressor(CompileConfigMixin, keras.Sequential):
    ...     def compile(self, optimizer="auto", loss="mse", **kwargs):
    ...         optimizer = "adam" if optimizer == "auto" else optimizer
    ...         super().compile(optimizer=optimizer, loss=loss, **kwargs)
    >>> model = Regressor([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile()
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> model.save(path)
    >>> keras.saving.load_model(path).optimizer.built   # saved unbuilt, loads unbuilt
    False
    """

    def get_compile_config(self):
        config = super().get_compile_config()
        optimizer = getattr(self, "optimizer", None)
        if config is not None and optimizer is not None:
            config = dict(config, **{_OPTIMIZER_BUILT: bool(optimizer.built)})
        return config

    def compile_from_config(self, config):
        """Restore the compile settings saved in a `.keras` file."""
        config = dict(config)
        optimizer_built = config.pop(_OPTIMIZER_BUILT, True)
        self.compile(**keras.saving.deserialize_keras_object(config))
        if optimizer_built and self.built:
            self.optimizer.build(self.trainable_variables)
