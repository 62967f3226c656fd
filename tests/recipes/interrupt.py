"""A callback that simulates Ctrl-C during training."""

import keras


class InterruptAfter(keras.callbacks.Callback):
    """Raises KeyboardInterrupt once `epochs` epochs have finished (after the
    callbacks listed before it have seen the epoch's end)."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epochs:
            raise KeyboardInterrupt
