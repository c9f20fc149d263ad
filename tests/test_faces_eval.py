"""Faces, issue 28: classical baselines against scikit-learn, the ArcFace-style loss by hand,
the threshold's source, and a finished run evaluated on a folder of new people alone."""

import math
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import faces, losses, train
from jaxcnn.tasks import faces as faces_task


def _clusters(seed=0, people=4, per_person=6, dim=10):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(people), per_person)
    centres = rng.normal(size=(people, dim)) * 2
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


def _same_up_to_sign(a, b):
    a, b = a / np.linalg.norm(a, axis=0), b / np.linalg.norm(b, axis=0)
    np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(a * b, axis=0)), 1.0, atol=1e-6)


def test_eigenfaces_match_sklearn_pca():
    from sklearn.decomposition import PCA

    x, _ = _clusters()
    ours, theirs = faces.pca(x, 5), PCA(5).fit(x)
    np.testing.assert_allclose(ours.mean, theirs.mean_, atol=1e-12)
    _same_up_to_sign(ours.basis, theirs.components_.T)
    # Projections too, up to each axis's sign.
    np.testing.assert_allclose(np.abs(ours(x)), np.abs(theirs.transform(x)), atol=1e-8)
    with pytest.raises(ValueError, match=r"components must be in \[1, min\(N - 1, D\)\]"):
        faces.pca(x, 24)


def test_fisher_lda_matches_sklearn_eigen_solver():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, labels = _clusters(1)
    ours = faces.fisher_lda(x, labels)
    theirs = LinearDiscriminantAnalysis(solver="eigen").fit(x, labels).scalings_[:, :3]
    assert ours.shape == (10, 3)  # c - 1 = 3 discriminants
    _same_up_to_sign(ours, theirs)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=0), 1.0)


def test_fisherfaces_is_pca_to_n_minus_c_then_lda():
    """Belhumeur et al.: W_opt = W_pca W_fld, PCA to N - c = 20 dimensions (of 30), LDA to 3;
    checked against scikit-learn's PCA then LDA on the same 24 rows."""
    from sklearn.decomposition import PCA
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, labels = _clusters(2, dim=30)
    fisher = faces.fisherfaces(x, labels)
    assert fisher.basis.shape == (30, 3)
    reduced = PCA(20).fit(x)
    lda = LinearDiscriminantAnalysis(solver="eigen").fit(reduced.transform(x), labels)
    _same_up_to_sign(fisher.basis, reduced.components_.T @ lda.scalings_[:, :3])
    with pytest.raises(ValueError, match="N - c >= c - 1"):
        faces.fisherfaces(x[:6], np.arange(6) % 4)


def test_baselines_fit_on_training_rows_only():
    x, labels = _clusters(3)
    fitted = faces.fit_baselines(x[:12], labels[:12], eigenfaces=50)
    np.testing.assert_array_equal(fitted["pixels"](x), x)  # raw pixels: the image itself
    np.testing.assert_allclose(fitted["eigenfaces"].mean, x[:12].mean(0))
    assert fitted["eigenfaces"].basis.shape == (10, 10)  # min(50, N - 1 = 11, D = 10)
    assert fitted["fisherfaces"].basis.shape == (10, 1)  # 2 training people -> 1 axis
    with pytest.raises(ValueError, match="10 values per image"):
        fitted["eigenfaces"](np.zeros((2, 9)))


def test_arcface_loss_by_hand():
    # One row, 3 classes, true class 0 at cos 0.6: its logit s cos(acos(0.6) + m).
    s, m = 2.0, 0.5
    logits = [s * math.cos(math.acos(0.6) + m), s * 0.8, 0.0]
    expected = -logits[0] + math.log(sum(math.exp(v) for v in logits))
    got = losses.additive_angular_margin_loss(jnp.array([[0.6, 0.8, 0.0]]), jnp.array([0]), s, m)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # theta_y + m beyond pi (cos -0.95: theta 2.82 rad): target cos - m sin m instead.
    logits = [s * (-0.95 - m * math.sin(m)), s * 0.1]
    expected = -logits[0] + math.log(sum(math.exp(v) for v in logits))
    got = losses.additive_angular_margin_loss(jnp.array([[-0.95, 0.1]]), jnp.array([0]), s, m)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # margin 0: plain softmax cross-entropy of s * cos.
    cos = jnp.array([[0.3, -0.2], [0.1, 0.9]])
    plain = losses.additive_angular_margin_loss(cos, jnp.array([1, 1]), 3.0, 0.0)
    expected = np.mean([-3 * -0.2 + math.log(math.exp(0.9) + math.exp(-0.6)),
                        -2.7 + math.log(math.exp(0.3) + math.exp(2.7))])
    assert float(plain) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="cosines must be"):
        losses.additive_angular_margin_loss(cos, jnp.array([1]), 3.0, 0.5)


def test_at_threshold_and_open_set_sizes_by_hand():
    d = np.array([0.1, 0.5, 0.9, 0.3, 1.2])
    same = np.array([1, 1, 1, 0, 0], bool)
    # Accept d <= 0.6: positives 0.1, 0.5 (2 of 3), negatives 0.3 (1 of 2); right 2 + 1 = 3.
    assert faces.at_threshold(d, same, 0.6) == {"accuracy": 0.6, "val": 2 / 3, "far": 0.5,
                                                 "threshold": 0.6}
    assert [faces.open_set_sizes(n) for n in (2, 3, 5, 10, 40)] == [
        (0, 0), (2, 1), (3, 2), (5, 5), (5, 5)]


def test_threshold_source():
    config = train.default_config()
    config.task = {"threshold": 0.5, "threshold_source": "4 people-folds of s1-s20"}
    settings = faces_task.settings(config)
    assert faces_task.recognition_threshold(settings) == (
        0.5, "the run's task.threshold, chosen on 4 people-folds of s1-s20")
    assert faces_task.recognition_threshold(settings, 0.7) == (0.7, "--threshold")
    with pytest.raises(train.UsageError, match="no task.threshold"):
        faces_task.recognition_threshold(faces_task.settings(train.default_config()))


@pytest.mark.slow  # a second full evaluation of the same figures
def test_folder_of_new_people_alone_gives_the_same_figures(shared_data, tmp_path):
    """A few-step run on s1-s20, evaluated on s21-s30 inside the full folder and on a copy of
    s21-s30 alone: every figure of the model and of the three baselines is the same."""
    from experiments.configs import faces_att

    att = os.path.join(shared_data, "att_faces")
    alone = tmp_path / "new_people"
    for person in (f"s{i}" for i in range(21, 31)):
        shutil.copytree(os.path.join(att, person), alone / person)
    config = faces_att.get_config(
        "conv_impl=xla,train_steps=4,warmup_steps=1,image_size=(24,24),progress=False,"
        "tensorboard=False,async_checkpoints=False,task.eigenfaces=20")
    config.dataset, config.task.train_data = f"faces:{att}", att
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir, faces_task.build(config))
    program, _, state = train.restore_checkpoint(config, workdir, faces_task.build(config))
    inside = train.evaluate(program, state)
    other = config.copy_and_resolve_references()
    other.dataset = f"faces:{alone}"
    task = faces_task.build(other)
    assert task.dataset.eval.names == tuple(f"s{i}" for i in range(21, 31))
    assert task.dataset.num_classes == 20  # training people still from task.train_data
    outside = train.evaluate(train.build_program(other, task), state)
    assert set(inside) == set(outside)
    for method in ("model", *faces.BASELINES):
        assert f"{method}_open_set_rejection" in inside
    for key, value in inside.items():
        assert outside[key] == pytest.approx(value, abs=1e-6), key
    # The generic `evaluate --workdir=W --data=faces:DIR` path: the checkpoint is refused for
    # another dataset unless the data was replaced on purpose, and then gives the same figures.
    with pytest.raises(train.FingerprintMismatchError, match="differs in dataset"):
        train.evaluate_checkpoint(other, workdir, faces_task.build)
    _, restored = train.evaluate_checkpoint(other, workdir, faces_task.build, other_data=True)
    for key, value in inside.items():
        assert restored[key] == pytest.approx(value, abs=1e-6), key


def test_task_module_declares_every_key_and_rejects_bad_values():
    assert faces_task.NAME == "faces" and set(faces_task.HELP) == set(faces_task.DEFAULTS)
    config = train.default_config()
    config.task = {"loss": "cosface"}
    with pytest.raises(train.UsageError, match=r"task.loss must be one of \('triplet', "
                                                r"'arcface', 'arcface\+triplet'\)"):
        faces_task.settings(config)
    config.task = {}
    with pytest.raises(train.UsageError, match="config.dataset must be 'faces:PATH'"):
        faces_task.data_folder(config)
