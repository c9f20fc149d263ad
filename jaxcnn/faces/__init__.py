"""Face verification and recognition with a learned similarity d(x1, x2) = ||f(x1) - f(x2)||^2.

- `encoder`: `FaceEncoder` (a registry trunk + head + L2-normalised embedding; optional class
  centres for a margin softmax), `siamese_distance`.
- `protocol`: the verification protocol (pairs, k-fold, ROC, VAL@FAR), one-shot, open-set.
- `baselines`: raw pixels, Eigenfaces, Fisherfaces, fitted on the training people only.
- `recognition`: `verify`, `enroll`, `recognize` (nearest enrolled person or NOT_RECOGNISED).
- `evaluation`: every figure for the model and the baselines on the same pairs and draws.
"""

from jaxcnn.faces.baselines import (
    BASELINES,
    Projection,
    fisher_lda,
    fisherfaces,
    fit_baselines,
    pca,
)
from jaxcnn.faces.encoder import (
    HEADS,
    FaceEncoder,
    embedding_backbone,
    l2_normalize,
    siamese_distance,
)
from jaxcnn.faces.evaluation import (
    OPEN_SET_ACCEPTANCE,
    at_threshold,
    flat_metrics,
    held_out_reports,
    method_report,
    open_set_sizes,
)
from jaxcnn.faces.protocol import (
    best_threshold,
    kfold_accuracy,
    make_pairs,
    one_shot_accuracy,
    open_set_rejection,
    pair_distances,
    read_pairs_file,
    roc_curve,
    val_at_far,
    verification_report,
)
from jaxcnn.faces.recognition import (
    NOT_RECOGNISED,
    Database,
    enroll,
    nearest_enrolled,
    recognize,
    squared_distances,
    verify,
)

__all__ = [
    "BASELINES", "HEADS", "NOT_RECOGNISED", "OPEN_SET_ACCEPTANCE", "Database", "FaceEncoder",
    "Projection", "at_threshold", "best_threshold", "embedding_backbone", "enroll",
    "fisher_lda", "fisherfaces", "fit_baselines", "flat_metrics", "held_out_reports",
    "kfold_accuracy", "l2_normalize", "make_pairs", "method_report", "nearest_enrolled",
    "one_shot_accuracy", "open_set_rejection", "open_set_sizes", "pair_distances", "pca",
    "read_pairs_file", "recognize", "roc_curve", "siamese_distance", "squared_distances",
    "val_at_far", "verification_report", "verify",
]
