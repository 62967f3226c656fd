"""The `keras-sparse-moe` command line: every command, --help, bad arguments."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from keras_sparse_moe.cli import main
from tests.configs import MOE_VIT_CLI_OVERRIDES

COMMANDS = ("presets", "profile", "train", "evaluate", "export", "demo")
EAGER = [] if keras.backend.backend() == "jax" else ["--run-eagerly"]
TINY = MOE_VIT_CLI_OVERRIDES


def _image_folder(root):
    """3 classes x 8 RGB images of mixed sizes."""
    for c, name in enumerate(("circle", "square", "triangle")):
        os.makedirs(root / name)
        for i in range(8):
            size = (10, 12) if i % 2 else (12, 12)
            Image.new("RGB", size, (80 * c, 10 * i, 255 - 80 * c)).save(root / name / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`keras-sparse-moe train` on a generated image folder (tiny model)."""
    data = _image_folder(tmp_path_factory.mktemp("images"))
    out = str(tmp_path_factory.mktemp("cli_run"))
    code = main(["train", "--data", data, "--output", out, "--epochs", "1", "--batch-size", "8",
                 "--max-batches", "2", "--quiet", *EAGER, *TINY])
    return code, data, out


@pytest.mark.single_backend
@pytest.mark.parametrize("command", (None,) + COMMANDS)
def test_help(capsys, command):
    assert main(([command] if command else []) + ["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: keras-sparse-moe")


@pytest.mark.single_backend
@pytest.mark.parametrize(
    "argv, message",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["train", "--epochs", "ten"], "invalid int value: 'ten'"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["export", "--model", "moe_vit_tiny"], "required: --output"),
        (["train", "--augment", "rotate"], "invalid choice: 'rotate'"),
        (["train", "--epochs", "0"], "--epochs must be >= 1"),
        (["train", "--set", "oops"], "KEY=VALUE"),
        (["train", "--data", "mnist", "--output", "{tmp}"], "Unknown dataset spec 'mnist'"),
        (["train", "--data", "folder:{tmp}/missing", "--output", "{tmp}"], "missing"),
        (["train", "--preset", "limoe_tiny", "--label-smoothing", "0.2", "--output", "{tmp}"],
         "only for image classifiers"),
        (["train", "--preset", "limoe_tiny", "--extra-train-data", "optdigits-train", "--output",
          "{tmp}"], "--extra-train-data: only for image classifiers"),
        (["train", "--extra-train-data", "optdigit", "--output", "{tmp}/run"],
         "Unknown dataset spec 'optdigit'"),
        (["export", "--model", "limoe_tiny", "--output", "{tmp}/towers.tflite"],
         "must be a directory for its two towers"),
        (["train", "--output", "{tmp}/file/sub"], "directory"),
        (["evaluate", "--model", "{tmp}/missing.keras"], "No model file"),
        (["evaluate", "--model", "{tmp}/notes.keras"], "is not a Keras model file"),
        (["export", "--model", "{tmp}/notes.keras", "--output", "{tmp}/m.tflite"],
         "is not a Keras model file"),
        (["profile", "--preset", "no_such_preset"], "Unknown preset 'no_such_preset'"),
        (["export", "--model", "moe_vit_tiny", "--output", "{tmp}/m.tflite",
          "--quantization", "int8"], "needs representative data"),
        # Each of these once gave a traceback or a silent bad run.
        (["train", "--learning-rate", "nan", "--output", "{tmp}/run"],
         "`learning_rate` must be a finite number"),
        (["train", "--warmup-fraction", "nan", "--output", "{tmp}/run"],
         "`warmup_fraction` must be a finite number"),
        (["train", "--set", "capacity_factor=NaN", "--output", "{tmp}/run"],
         "`capacity_factor` must be a finite number > 0"),
        (["train", "--set", "num_classes=5", "--output", "{tmp}/run"],
         "num_classes=5 is not allowed when training"),
        (["evaluate", "--model", "limoe_tiny_digits", "--output", "{tmp}/file"],
         "exists and is not a directory"),
        (["profile", "--preset", "moe_vit_tiny", "--json", "{tmp}"], "it is a directory"),
        (["profile", "--preset", "moe_vit_tiny", "--json", "{tmp}/missing/p.json"],
         "does not exist"),
        (["export", "--model", "moe_vit_tiny", "--output", "{tmp}/missing/m.tflite"],
         "missing' does not exist"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(capsys, tmp_path, argv, message):
    (tmp_path / "file").write_text("a file, not a directory")
    (tmp_path / "notes.keras").write_text("a text file named like a model")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "error:" in lines[0]


@pytest.mark.single_backend
def test_export_refuses_data_with_another_class_count(capsys, tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / "two_classes" / name)
        for i in range(5):
            Image.new("L", (8, 8), 30 * i).save(tmp_path / "two_classes" / name / f"{i}.png")
    assert main(["export", "--model", "moe_vit_tiny_digits", "--output", str(tmp_path / "m.tflite"),
                 "--data", f"folder:{tmp_path / 'two_classes'}"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "predicts 10 classes but dataset" in errors[0]
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.single_backend("torch")  # eager evaluation: no graph to trace
def test_untrained_presets_and_python_warnings_are_one_line_warnings(capsys, tmp_path):
    assert main(["evaluate", "--model", "moe_vit_tiny", "--data", "digits", "--max-batches", "1",
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "moe_vit_tiny ships no trained weights" in err
    assert main(["evaluate", "--model", "moe_vit_tiny_digits", "--data", "digits",
                 "--max-batches", "1", "--quiet"]) == 0
    assert "no trained weights" not in capsys.readouterr().err
    # A skipped unreadable image is a Python warning: one line, no source line.
    for name in ("a", "b"):
        os.makedirs(tmp_path / "imgs" / name)
        for i in range(5):
            Image.new("L", (8, 8), 30 * i).save(tmp_path / "imgs" / name / f"{i}.png")
    (tmp_path / "imgs" / "a" / "broken.png").write_bytes(b"not a png")
    assert main(["evaluate", "--model", "moe_vit_tiny_digits", "--data",
                 f"folder:{tmp_path / 'imgs'}", "--quiet"]) == 2
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and warning[0].startswith("keras-sparse-moe: warning:")
    assert "Skipped 1 unreadable" in warning[0] and "warnings.warn" not in err


@pytest.mark.single_backend
def test_backend_must_be_chosen_before_keras_is_imported(capsys):
    other = next(b for b in ("tensorflow", "jax", "torch") if b != keras.backend.backend())
    assert main(["presets", "--backend", other]) == 2
    assert "before Keras is imported" in capsys.readouterr().err


@pytest.mark.single_backend
def test_presets_table(capsys):
    assert main(["presets", "--family", "moe_vit", "--width", "30"]) == 0
    out = capsys.readouterr().out
    assert "moe_vit_tiny" in out and "vmoe_s32_e8_k2_last2" in out
    assert "limoe_tiny" not in out
    # An 80-column terminal shows every name and figure whole.
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "moe_vit_tiny_synthetic_digits " in out and "limoe_tiny_digits " in out
    assert "369.2K" in out and "1.01B" in out


@pytest.mark.single_backend
def test_profile_writes_json(capsys, tmp_path):
    path = tmp_path / "profile.json"
    assert main(["profile", "--preset", "moe_vit_tiny", "--json", str(path)]) == 0
    assert "parameters" in capsys.readouterr().out
    report = json.loads(path.read_text())
    assert report["params_total"] > report["params_active"] > 0


@pytest.mark.single_backend
def test_profile_of_paper_sized_presets_does_not_build_them(capsys, tmp_path, monkeypatch):
    import keras_sparse_moe.cli as cli
    from keras_sparse_moe import from_preset
    from keras_sparse_moe import profile

    # The same report as the built model (checked on a small-enough preset) ...
    path = tmp_path / "s32.json"
    assert main(["profile", "--preset", "vmoe_s32_e8_k2_last2", "--json", str(path)]) == 0
    built = profile(from_preset("vmoe_s32_e8_k2_last2", load_weights=False)).to_dict()
    report = json.loads(path.read_text())
    assert report.pop("name") == "vmoe_s32_e8_k2_last2"  # named after the preset
    built.pop("name")
    assert report == json.loads(json.dumps(built, default=float))
    # ... and a 3.68B-parameter preset is profiled without allocating it.
    def no_build(*args, **kwargs):
        raise AssertionError("profile built the model")

    monkeypatch.setattr(cli, "_load_model", no_build)
    path = tmp_path / "soft.json"
    assert main(["profile", "--preset", "soft_moe_b16_e128_last6", "--json", str(path)]) == 0
    assert 3.6e9 < json.loads(path.read_text())["params_total"] < 3.8e9
    capsys.readouterr()


def test_train_writes_artifacts_for_folder_data(trained):
    code, _, out = trained
    assert code == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["dataset"]["class_names"] == ["circle", "square", "triangle"]
    assert len(metrics["per_class"]) == 3
    for name in ("model.keras", "training_curves.png", "routing_heatmap.png", "preset/config.json"):
        assert os.path.isfile(os.path.join(out, name)), name


@pytest.mark.single_backend("torch")
def test_train_with_extra_training_data(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--extra-train-data", "optdigits-train", "--output", out, "--epochs", "1",
                 "--batch-size", "32", "--max-batches", "2", "--quiet", "--no-plots", *EAGER, *TINY]) == 0
    dataset = json.load(open(os.path.join(out, "metrics.json")))["dataset"]
    assert dataset["counts"] == {"train": 1294 + 3823, "validation": 144, "test": 359}
    assert "optdigits-train train (3823)" in dataset["splits"]["train"]
    capsys.readouterr()


def test_evaluate_command(trained, tmp_path, capsys):
    _, data, out = trained
    output = tmp_path / "eval [run 1]"  # brackets print as they are (not rich markup)
    assert main(["evaluate", "--model", os.path.join(out, "model.keras"), "--data", data,
                 "--output", str(output), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "per class" in printed and "eval [run 1]" in printed.replace("\n", "")
    metrics = json.loads((output / "metrics.json").read_text())
    confusion = np.asarray(metrics["confusion_matrix"])  # rows: true classes
    assert confusion.sum() == metrics["examples"]
    assert metrics["accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    assert metrics["latency_ms_per_image"] > 0


@pytest.mark.single_backend  # the command; tests/export covers the backends
def test_export_command_checks_litert_accuracy(trained, tmp_path, capsys):
    _, data, out = trained
    path = tmp_path / "model.tflite"
    assert main(["export", "--model", os.path.join(out, "model.keras"), "--output", str(path),
                 "--quantization", "dynamic_int8", "--data", data, "--quiet"]) == 0
    assert path.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "LiteRT test accuracy" in printed
    # The file takes the raw images of the folder, resized and scaled in its graph.
    assert "raw images" in printed and "in the .tflite: " in printed


def _hide_litert_interpreter(monkeypatch):
    # As on a platform without ai_edge_litert wheels: importing it fails.
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)


@pytest.mark.single_backend
def test_export_without_the_litert_interpreter_writes_the_file(trained, tmp_path, capsys,
                                                               monkeypatch):
    from keras_sparse_moe.export import LiteRTModel
    from keras_sparse_moe.export import list_litert_ops
    from keras_sparse_moe.export import litert_interpreter_available

    _, data, out = trained
    _hide_litert_interpreter(monkeypatch)
    assert not litert_interpreter_available()
    path = tmp_path / "model.tflite"
    assert main(["export", "--model", os.path.join(out, "model.keras"), "--output", str(path),
                 "--data", data, "--quiet"]) == 0
    assert path.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "not run" in printed and "keras-sparse-moe[litert]" in printed
    assert "LiteRT test accuracy" not in printed
    # Running the file is what needs the interpreter: one clear error, not an ImportError.
    with pytest.raises(RuntimeError, match=r"needs the LiteRT interpreter.*\[litert\]"):
        LiteRTModel(str(path))
    monkeypatch.undo()
    assert litert_interpreter_available()
    runner = LiteRTModel(str(path))
    assert runner.input["shape"][0] == 1
    # The op types of the file, without the interpreter's run-time DELEGATE nodes.
    assert runner.ops == list_litert_ops(str(path)) and "DELEGATE" not in runner.ops


@pytest.mark.single_backend
def test_a_bad_keras_backend_variable_gets_one_line_and_backend_overrides_it():
    env = dict(os.environ, KERAS_BACKEND="bogus")
    result = subprocess.run([sys.executable, "-m", "keras_sparse_moe.cli", "--help"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "KERAS_BACKEND='bogus' is not a Keras backend" in errors[0]
    # --backend decides before Keras is imported, so the variable does not matter then.
    backend = keras.backend.backend()
    result = subprocess.run([sys.executable, "-m", "keras_sparse_moe.cli", "presets", "--backend",
                             backend, "--family", "moe_vit"], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "moe_vit_tiny" in result.stdout


@pytest.mark.single_backend
def test_console_entry_point_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "keras_sparse_moe.cli", "train", "--epochs",
                             "ten"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "invalid int value: 'ten'" in errors[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "torch",
                    reason="the run_demo docstring example runs the quick demo under PyTorch")
def test_demo_quick(tmp_path, capsys):
    # The demo fine-tunes the shipped pretrained preset: after two batches at
    # the fine-tuning rate it still reads most digits (81% of the test split before any
    # fine-tuning), in Keras and in LiteRT; a model that lost its pretrained
    # weights would be near chance (0.1).
    assert main(["demo", "--quick", "--quiet", "--output", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "test accuracy, LiteRT float32" in captured.out
    assert "warning" not in captured.err  # e.g. no range warning on fit's validation data
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == keras.backend.backend()
    assert summary["preset"] == "moe_vit_tiny_synthetic_digits" and summary["pretrained"]
    assert summary["learning_rate"] == 5e-4
    assert summary["extra_train_data"] == "optdigits-train" and summary["epochs"] == 1
    train = json.loads((tmp_path / "train" / "metrics.json").read_text())["dataset"]
    assert train["counts"]["train"] == 1294 + 3823  # the digits' train split and optdigits-train
    assert os.path.isfile(summary["litert"]["float32"]["path"])
    assert summary["keras_accuracy"] > 0.5
    assert summary["litert"]["float32"]["accuracy"] > 0.5


@pytest.mark.single_backend
@pytest.mark.slow
def test_demo_quick_from_scratch_and_without_the_litert_interpreter(tmp_path, capsys,
                                                                    monkeypatch):
    # test_demo_quick runs the .tflite file; here the interpreter is missing (as on a
    # platform without ai_edge_litert wheels): the demo still exports and says so.
    _hide_litert_interpreter(monkeypatch)
    assert main(["demo", "--quick", "--quiet", "--from-scratch", "--output", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["preset"] == "moe_vit_tiny" and not summary["pretrained"]
    assert summary["learning_rate"] == 2e-3 and summary["extra_train_data"] is None
    assert summary["params_total"] < 100_000  # the quick smoke model, not moe_vit_tiny
    train = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert summary["keras_accuracy"] == pytest.approx(train["accuracy"])  # the summary's source
    assert summary["litert"]["float32"]["accuracy"] is None
    assert (tmp_path / "moe_vit_tiny_float32.tflite").stat().st_size > 0
    assert "not run: no LiteRT interpreter" in capsys.readouterr().out


@pytest.mark.single_backend
def test_demo_rejects_a_non_bool_from_scratch(tmp_path):
    from keras_sparse_moe.recipes.demo import run_demo

    with pytest.raises(ValueError, match="from_scratch.*received 'yes'"):
        run_demo(str(tmp_path), from_scratch="yes")


@pytest.mark.single_backend
def test_progress_messages_are_printed_once_even_if_the_root_logger_has_a_handler():
    # TensorFlow's LiteRT converter gives the root logger a handler; the CLI's
    # own handler must then be the only one that prints the package's messages.
    import logging

    from keras_sparse_moe.cli import _setup_logging

    class Records(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    root, ours = Records(), Records()
    logging.getLogger().addHandler(root)
    logger = logging.getLogger("keras_sparse_moe.recipes")
    try:
        restore = _setup_logging(quiet=False)
        logging.getLogger("keras_sparse_moe").addHandler(ours)
        logger.info("Exporting LiteRT")
        restore()
        logging.getLogger("keras_sparse_moe").removeHandler(ours)
        assert ours.messages == ["Exporting LiteRT"]
        assert root.messages == []
        assert logging.getLogger("keras_sparse_moe").propagate  # restored
    finally:
        logging.getLogger().removeHandler(root)
