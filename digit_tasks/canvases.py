"""A small segmentation and detection task from embedded data: the scikit-learn digits (8x8,
1797 images) enlarged and pasted on larger noisy canvases, with their pixel masks and boxes.

Used by the keras-hub tests and `python -m benchmarks.hub_tasks` (the `digit_tasks`
package says why here); needs no download.

- `images`: float32 RGB 0..255, `[n, size, size, 3]`;
- `masks`: int32 `[n, size, size, 1]`, 0 for background and `1 + digit` on the digit's pixels;
- `boxes`: float32 `[n, MAX_DIGITS, 4]` in "yxyx" pixels (the tight box of each digit's mask),
  padded with -1; `labels`: int32 `[n, MAX_DIGITS]`, the digit, padded with -1.

Train and held-out canvases are cut from disjoint digit images (`split`).

Example:
    >>> canvases = make_canvases(4, size=64, split="train", seed=0)
    >>> canvases.images.shape, canvases.masks.shape, canvases.boxes.shape
    ((4, 64, 64, 3), (4, 64, 64, 1), (4, 2, 4))
"""
from dataclasses import dataclass

import numpy as np

NUM_DIGITS = 10
SEGMENTATION_CLASSES = NUM_DIGITS + 1  # background + ten digits
MAX_DIGITS = 2
HELD_OUT_FRACTION = 0.25
DIGIT_MAX_VALUE = 16.0      # sklearn digits are 0..16
MASK_THRESHOLD = 4.0        # a pixel belongs to the digit above a quarter of full ink
NOISE_LEVEL = 40.0          # uniform background noise, 0..NOISE_LEVEL grey levels


@dataclass
class Canvases:
    images: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def _digit_images(split):
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(1234).permutation(len(digits.target))
    held_out = int(len(order) * HELD_OUT_FRACTION)
    chosen = order[:held_out] if split == "held_out" else order[held_out:]
    return digits.images[chosen].astype(np.float32), digits.target[chosen].astype(np.int32)


def _enlarge(digit, scale):
    """Bilinear enlargement of one 8x8 digit by an integer `scale`."""
    size = digit.shape[0]
    coords = (np.arange(size * scale) + 0.5) / scale - 0.5
    coords = np.clip(coords, 0, size - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, size - 1)
    frac = coords - low
    rows = digit[low] * (1 - frac)[:, None] + digit[high] * frac[:, None]
    return rows[:, low] * (1 - frac)[None, :] + rows[:, high] * frac[None, :]


def make_canvases(count, *, size=64, digit_scale=3, split="train", seed=0):
    """`count` canvases of `size x size` with one or two digits enlarged `digit_scale` times.

    Two digits sit in the left and right halves, so they never overlap.
    """
    if split not in ("train", "held_out"):
        raise ValueError(f'split must be "train" or "held_out", got {split!r}')
    digit_size = 8 * digit_scale
    if size < 2 * digit_size:
        raise ValueError(f"size {size} is too small for two digits of {digit_size} pixels; "
                         f"expected >= {2 * digit_size}")
    digits, targets = _digit_images(split)
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, NOISE_LEVEL, (count, size, size, 1)).astype(np.float32)
    masks = np.zeros((count, size, size, 1), np.int32)
    boxes = np.full((count, MAX_DIGITS, 4), -1.0, np.float32)
    labels = np.full((count, MAX_DIGITS), -1, np.int32)
    half = size // 2
    for n in range(count):
        slots = [0] if rng.random() < 0.5 else [0, 1]
        for slot in slots:
            index = rng.integers(len(digits))
            ink = _enlarge(digits[index], digit_scale)
            top = rng.integers(0, size - digit_size + 1)
            left = slot * half + rng.integers(0, half - digit_size + 1)
            if len(slots) == 1:  # a lone digit may sit anywhere
                left = rng.integers(0, size - digit_size + 1)
            window = (slice(top, top + digit_size), slice(left, left + digit_size), 0)
            images[n][window] = np.maximum(images[n][window], ink * (255.0 / DIGIT_MAX_VALUE))
            on = ink > MASK_THRESHOLD
            masks[n][window] = np.where(on, targets[index] + 1, masks[n][window])
            rows, cols = np.nonzero(on)
            boxes[n, slot] = (top + rows.min(), left + cols.min(),
                              top + rows.max() + 1, left + cols.max() + 1)
            labels[n, slot] = targets[index]
    return Canvases(np.repeat(images, 3, axis=-1), masks, boxes, labels)


def mean_iou(true_masks, predicted_masks, num_classes=SEGMENTATION_CLASSES):
    """Mean over classes present in `true_masks` or predicted, of |true & pred| / |true | pred|."""
    true_masks = np.asarray(true_masks).reshape(-1)
    predicted_masks = np.asarray(predicted_masks).reshape(-1)
    confusion = np.bincount(true_masks * num_classes + predicted_masks,
                            minlength=num_classes ** 2).reshape(num_classes, num_classes)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present]))


def box_iou(a, b):
    """IoU of two "yxyx" boxes."""
    height = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    width = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = height * width
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precision(canvases, predicted_boxes, predicted_labels, predicted_scores,
                      iou_threshold=0.5):
    """Mean over the digit classes of the all-point interpolated average precision at
    `iou_threshold` (PASCAL VOC 2010+; COCO's AP50 up to its 101-point sampling).

    Detections are padded with label -1. Written here rather than taken from pycocotools: it
    is twenty lines on in-memory arrays, where COCO wants JSON annotation files.

    >>> canvases = make_canvases(2, size=32, digit_scale=2, seed=0)
    >>> average_precision(canvases, canvases.boxes, canvases.labels, np.ones(canvases.labels.shape))
    1.0
    """
    precisions = []
    for digit in range(NUM_DIGITS):
        truths = {n: [box for box, label in zip(canvases.boxes[n], canvases.labels[n])
                      if label == digit] for n in range(len(canvases.labels))}
        total = sum(len(boxes) for boxes in truths.values())
        if total == 0:
            continue
        detections = sorted(((score, n, box) for n in range(len(canvases.labels))
                             for box, label, score in zip(predicted_boxes[n], predicted_labels[n],
                                                          predicted_scores[n]) if label == digit),
                            key=lambda detection: -detection[0])
        matched, hits = set(), []
        for _, n, box in detections:
            ious = [box_iou(truth, box) for truth in truths[n]]
            best = int(np.argmax(ious)) if ious else -1
            hit = best >= 0 and ious[best] >= iou_threshold and (n, best) not in matched
            if hit:
                matched.add((n, best))
            hits.append(hit)
        true_positives = np.cumsum(hits) if hits else np.zeros(0)
        recall = np.concatenate([[0.0], true_positives / total])
        precision = np.concatenate([[1.0], true_positives / np.arange(1, len(hits) + 1)])
        # Precision envelope (the best precision at this recall or beyond), then its area.
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        precisions.append(float(np.sum(np.diff(recall) * envelope[1:])))
    return float(np.mean(precisions))


def detection_scores(canvases, predicted_boxes, predicted_labels, predicted_scores,
                     iou_threshold=0.5, score_threshold=0.5):
    """Recall and precision at `iou_threshold`: a digit is found by a detection of its class
    with a score above `score_threshold`, each detection matching at most one digit.
    `located` is the recall when any class counts (localisation alone)."""
    found = total = kept = located = 0
    for n in range(len(canvases.labels)):
        detections = [(box, label) for box, label, score in
                      zip(predicted_boxes[n], predicted_labels[n], predicted_scores[n])
                      if label >= 0 and score >= score_threshold]
        kept += len(detections)
        used = set()
        for box, label in zip(canvases.boxes[n], canvases.labels[n]):
            if label < 0:
                continue
            total += 1
            located += any(box_iou(box, candidate) >= iou_threshold for candidate, _ in detections)
            for index, (candidate, candidate_label) in enumerate(detections):
                if index not in used and candidate_label == label \
                        and box_iou(box, candidate) >= iou_threshold:
                    used.add(index)
                    found += 1
                    break
    return {"recall": found / max(total, 1), "precision": found / max(kept, 1),
            "located": located / max(total, 1),
            "digits": total, "detections": kept}
