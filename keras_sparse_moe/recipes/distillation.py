"""Knowledge distillation of an image classifier from an ensemble of
teachers (Hinton et al. 2015, "Distilling the Knowledge in a Neural
Network").

The student is trained on `cross_entropy(labels, student) + weight *
T^2 * KL(teacher_T || student_T)`, where `teacher_T` is the mean of the
teachers' softmax at temperature `T` and `student_T` the student's. The
teachers run in inference mode on the same (augmented) batch as the student
and are never updated. Everything goes through `keras.Model.compute_loss`,
so the same code trains on TensorFlow, JAX and PyTorch.

`train_classifier(..., teachers=[...])` uses it; `recipes/moe_vit.py
--teachers` is the command-line form.
"""

import keras
from keras import ops

from keras_sparse_moe.utils.validation import check_float

# Defaults of the recipes, the command line and `Distiller` (Hinton et al.
# 2015 use T in 2..20; T = 2 with weight 1 were fixed before the digits runs).
DEFAULT_TEMPERATURE = 2.0
DEFAULT_DISTILLATION_WEIGHT = 1.0


def ensemble_probabilities(teacher_logits, temperature=1.0):
    """Mean of the softmax at `temperature` of several teachers' logits.

    Args:
        teacher_logits: list of `(batch, classes)` logits.
        temperature: float > 0.

    Example:
    >>> import numpy as np
    >>> p = ensemble_probabilities([np.array([[0.0, 0.0]]), np.array([[0.0, 1e9]])])
    >>> np.round(keras.ops.convert_to_numpy(p), 3).tolist()
    [[0.25, 0.75]]
    """
    probabilities = [
        ops.softmax(ops.cast(logits, "float32") / temperature, axis=-1) for logits in teacher_logits
    ]
    return ops.mean(ops.stack(probabilities, axis=0), axis=0)


def distillation_loss(teacher_probabilities, student_logits, temperature=1.0):
    """`T^2 * KL(teacher || softmax(student / T))` per example (Hinton et al.:
    the `T^2` keeps the gradient scale independent of `T`).

    Example:
    >>> import numpy as np
    >>> teacher = np.array([[0.5, 0.5]], "float32")
    >>> float(distillation_loss(teacher, np.array([[0.0, 0.0]], "float32"))[0])
    0.0
    """
    teacher_probabilities = ops.cast(teacher_probabilities, "float32")
    log_student = ops.log_softmax(ops.cast(student_logits, "float32") / temperature, axis=-1)
    log_teacher = ops.log(ops.maximum(teacher_probabilities, 1e-12))
    kl = ops.sum(teacher_probabilities * (log_teacher - log_student), axis=-1)
    return kl * (temperature**2)


@keras.saving.register_keras_serializable(package="keras_sparse_moe")
class Distiller(keras.Model):
    """Trains `student` with its compiled loss plus a distillation loss from
    an ensemble of frozen `teachers`.

    `call` is the student's forward pass, so `fit`, `evaluate` and the
    compiled metrics see the student's logits; the auxiliary MoE losses of
    the student are included (the teachers run in inference mode and add
    none). Feed it preprocessed inputs (the student's
    `preprocess_samples` mapped over a `tf.data` pipeline); the teachers
    must expect the same inputs.

    Args:
        student: a Keras classifier returning logits (trained).
        teachers: list of Keras classifiers returning logits (frozen).
        temperature: float > 0, softmax temperature of the distillation.
        distillation_weight: float >= 0, weight of the distillation term
            (the label loss keeps weight 1).

    Example:
    >>> import numpy as np
    >>> def mlp():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(mlp(), [mlp(), mlp()], temperature=2.0)
    >>> distiller.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> history = distiller.fit(np.ones((8, 4)), np.zeros((8,)), epochs=1, verbose=0)
    >>> tuple(distiller.predict(np.ones((2, 4)), verbose=0).shape)
    (2, 3)
    """

    def __init__(self, student, teachers, temperature=DEFAULT_TEMPERATURE,
                 distillation_weight=DEFAULT_DISTILLATION_WEIGHT, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(student, keras.Model):
            raise ValueError(
                f"Argument `student` must be a Keras model; received {type(student).__name__}."
            )
        teachers = list(teachers) if isinstance(teachers, (list, tuple)) else [teachers]
        if not teachers or not all(isinstance(t, keras.Model) for t in teachers):
            raise ValueError(
                "Argument `teachers` must be a non-empty list of Keras models; received "
                f"{[type(t).__name__ for t in teachers]}."
            )
        self.temperature = check_float("temperature", temperature, minimum=0.0, strict=True)
        self.distillation_weight = check_float(
            "distillation_weight", distillation_weight, minimum=0.0
        )
        self.student = student
        for teacher in teachers:
            teacher.trainable = False
        self.teachers = teachers
        if student.built and all(t.built for t in teachers):
            self.built = True  # nothing of its own to create

    def build(self, input_shape):
        for model in [self.student, *self.teachers]:
            if not model.built:
                model.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
        )
        if not self.distillation_weight:
            return loss
        teacher_logits = [ops.stop_gradient(t(x, training=False)) for t in self.teachers]
        targets = ensemble_probabilities(teacher_logits, self.temperature)
        per_example = distillation_loss(targets, y_pred, self.temperature)
        return loss + self.distillation_weight * ops.mean(per_example)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teachers": [keras.saving.serialize_keras_object(t) for t in self.teachers],
                "temperature": self.temperature,
                "distillation_weight": self.distillation_weight,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["teachers"] = [keras.saving.deserialize_keras_object(t) for t in config["teachers"]]
        return cls(**config)


def trained_model(model):
    """The model a callback should look at: a `Distiller`'s student, or
    `model` itself.

    Example:
    >>> trained_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])).name.startswith("sequential")
    True
    """
    return model.student if isinstance(model, Distiller) else model
