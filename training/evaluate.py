"""Evaluation: top-1 / top-5 accuracy and the confusion matrix of a classifier.

Example:
    >>> import numpy as np
    >>> from keras_resnest.training.evaluate import classification_report
    >>> scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    >>> report = classification_report(scores, np.array([0, 1, 1]), ["a", "b", "c"], top_k=2)
    >>> report["top1"], report["top2"], report["confusion_matrix"]
    (0.3333333333333333, 1.0, [[1, 0, 0], [1, 0, 1], [0, 0, 0]])
"""
import numpy as np


def top_k_accuracy(scores, labels, k):
    """Fraction of rows whose true label is among the k highest scores."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(
            f"scores {scores.shape} and labels {labels.shape}: expected (N, classes) and (N,)."
        )
    k = min(k, scores.shape[1])
    # A stable sort on -scores keeps the lower index first among ties, like argmax.
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1))) if len(labels) else 0.0


def confusion_matrix(labels, predictions, num_classes):
    """matrix[true, predicted] counts."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def classification_report(scores, labels, class_names, top_k=5):
    """Top-1, top-k and the confusion matrix as a JSON-ready dict."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    matrix = confusion_matrix(labels, scores.argmax(axis=1), len(class_names))
    return {
        "examples": int(len(labels)),
        "top1": top_k_accuracy(scores, labels, 1),
        f"top{top_k}": top_k_accuracy(scores, labels, top_k),
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


def format_report(report, max_classes=20):
    """Human-readable summary: accuracies and (for up to `max_classes` classes) the matrix."""
    top_keys = [k for k in report if k.startswith("top")]
    lines = [
        f"evaluation on {report['examples']} validation images: "
        + ", ".join(f"{k} {report[k]:.4f}" for k in top_keys)
    ]
    names = report["class_names"]
    if len(names) <= max_classes:
        width = max(5, *(len(n) for n in names))
        lines.append("confusion matrix (rows: true class, columns: predicted)")
        lines.append(" " * width + " " + " ".join(f"{n[:width]:>{width}}" for n in names))
        for name, row in zip(names, report["confusion_matrix"]):
            lines.append(f"{name[:width]:>{width}} " + " ".join(f"{c:>{width}}" for c in row))
    else:
        lines.append(f"confusion matrix: {len(names)} classes, see evaluation.json")
    return "\n".join(lines)
