"""keras-sparse-moe: sparse mixture-of-experts layers and models for Keras 3."""

from keras_sparse_moe import _quiet_tensorflow
from keras_sparse_moe.version import __version__

if _quiet_tensorflow.is_cli_process():
    from keras_sparse_moe import _cli_backend

    # The command line parses its arguments before Keras is imported, so that
    # `--help` and a bad argument answer at once; `cli.main` then imports the
    # API with `_import_api()`. `--backend NAME` decides the backend
    # first (a bad $KERAS_BACKEND gets one line). A library import loads the
    # whole API right away.
    _cli_backend.choose_backend()

    def _import_api():
        """Import the API into the package (`cli.main`, after parsing)."""
        from keras_sparse_moe import _api

        globals().update({k: v for k, v in vars(_api).items() if not k.startswith("_")})

else:
    from keras_sparse_moe._api import *  # noqa: F401,F403
