"""The digit canvases and the keras-hub task models sized for them: what
`python -m benchmarks.hub_tasks` trains and tests/test_hub.py checks.

Not installed (setup.py lists no `digit_tasks`): only the benchmarks and the tests use it, so it
sits beside them at the repository root. It is its own package because the benchmarks may not
import the tests, nor the tests the benchmarks (tests/test_benchmarks.py), and both need it;
it imports neither. The one piece a user needs, `initialise_heads_as_retinanet`, is in
`keras_resnest.hub` (docs/keras-hub.md).

- `canvases`: the scikit-learn digits pasted on noisy canvases, with masks and boxes, and
  their scores (mean IoU, AP50);
- `models`: keras-hub's DeepLabV3 segmenter and RetinaNet detector on a ResNeSt encoder.
"""
