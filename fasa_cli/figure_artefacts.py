"""File contract of the run artefacts behind Figs. 1b and 5 (numpy only, no torch or mmdet).

Written in the run's folder by fasa_cli.mmdet_ext.figure_logs, copied into the committed
record by fasa_cli.experiments.execute.run_artefacts (keys `true_class_prob` and
`class_means`), read by fasa_cli.experiments.figures.

- true_class_prob.json: per class `mean_prob` (None: no matched RoI), `rois`, `gt_instances`,
  with `class_ids`, `names`, `frequency`, `train_instance_count` and its `definition`.
- class_means.json: the seen classes' final FASA means as principal-component coordinates
  (`encode_components`), their final `groups`, and the `clustering` that formed them.
"""

from __future__ import annotations

import base64

import numpy as np

TRUE_CLASS_PROB_FILE = "true_class_prob.json"
CLASS_MEANS_FILE = "class_means.json"
IOU_THRESHOLD = 0.5
MEAN_COMPONENTS = 50  # t-SNE's usual PCA pre-reduction; exact when C - 1 or d is smaller
TRUE_CLASS_PROB_DEFINITION = (
    "mean, over validation RoIs (the test-time RPN proposals) whose highest IoU with a ground "
    "truth box is >= 0.5, of the box head's probability for that ground truth's class (softmax "
    "over the classes and background, or the classification loss's own activation, as at test "
    "time; the last stage's head in a cascade)"
)
_ENCODING = "float16-le-base64"


def encode_components(coords: np.ndarray) -> dict:
    """[n, k] coordinates as base64 float16 after division by their largest magnitude (so
    they cannot overflow): ~2 bytes a value in the record instead of a line per number."""
    coords = np.asarray(coords, dtype=np.float64)
    scale = float(np.abs(coords).max()) if coords.size else 0.0
    values = (coords / scale if scale > 0 else coords).astype("<f2")
    return {"shape": list(coords.shape), "scale": scale, "encoding": _ENCODING,
            "data": base64.b64encode(values.tobytes()).decode("ascii")}


def decode_class_means(entry: dict) -> np.ndarray:
    """The [n, k] coordinates stored by `encode_components`."""
    if entry.get("encoding") != _ENCODING:
        raise ValueError(f"class means encoded as {entry.get('encoding')!r}, expected {_ENCODING!r}")
    n, k = entry["shape"]
    values = np.frombuffer(base64.b64decode(entry["data"]), dtype="<f2").astype(np.float64)
    return values.reshape(n, k) * (entry["scale"] or 1.0)
