"""Classification metrics from predicted and true labels (pure NumPy)."""

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes):
    """`(num_classes, num_classes)` int matrix: rows true class, columns
    predicted class.

    Example:
    >>> confusion_matrix([0, 1, 1], [0, 1, 0], 2).tolist()
    [[1, 0], [1, 1]]
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"`y_true` and `y_pred` must have the same length; received {y_true.shape[0]} "
            f"and {y_pred.shape[0]}."
        )
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"`{name}` must hold class indices in [0, {num_classes}); received values "
                f"in [{values.min()}, {values.max()}]."
            )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def classification_report(y_true, y_pred, num_classes, class_names=None):
    """Accuracy, macro-averaged F1 and per-class precision / recall / F1.

    A class with no prediction has precision 0; a class with no example has
    recall 0 and is left out of the macro averages (as scikit-learn does with
    `labels` restricted to the classes present).

    Args:
        y_true: int array (N,), true classes.
        y_pred: int array (N,), predicted classes.
        num_classes: int, number of classes.
        class_names: optional sequence of `num_classes` names.

    Returns:
        A dict: `accuracy`, `macro_precision`, `macro_recall`, `macro_f1`,
        `examples`, `per_class` (list of dicts with `class`, `name`,
        `precision`, `recall`, `f1`, `support`) and `confusion_matrix`
        (nested lists).

    Example:
    >>> report = classification_report([0, 0, 1, 1], [0, 1, 1, 1], 2)
    >>> report["accuracy"], round(report["macro_f1"], 3)
    (0.75, 0.733)
    """
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must hold {num_classes} names; received {len(class_names)}."
        )
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    precision = np.divide(true_positive, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros(num_classes), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros(num_classes),
                   where=denominator > 0)
    present = support > 0
    total = int(matrix.sum())
    per_class = [
        {
            "class": c,
            "name": str(class_names[c]),
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "support": int(support[c]),
        }
        for c in range(num_classes)
    ]

    def macro(values):
        return float(values[present].mean()) if present.any() else 0.0

    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
        "examples": total,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
