"""Face verification and recognition: triplet losses, mining, the protocol, the data."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import counting, faces, losses, models
from jaxcnn.data import faces as face_data

# --- triplet loss on hand-made vectors ----------------------------------------------------


def test_triplet_loss_hand_made():
    a = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    p = jnp.array([[1.0, 0.0], [0.0, 1.0]])  # ||a-p||^2 = 1, 1
    n = jnp.array([[0.0, 2.0], [0.5, 0.5]])  # ||a-n||^2 = 4, 0.5
    # max(1 - 4 + 0.2, 0) = 0 ; max(1 - 0.5 + 0.2, 0) = 0.7 ; mean = 0.35
    assert float(losses.triplet_loss(a, p, n, 0.2)) == pytest.approx(0.35)
    assert float(losses.triplet_loss(a, p, n, 3.5)) == pytest.approx((0.5 + 4.0) / 2)


def test_triplet_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="positive"):
        losses.triplet_loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)), jnp.zeros((2, 3)))


# --- mining against brute force -----------------------------------------------------------

def _brute_force(x, labels, margin, mining, mask=None):
    x, labels = np.asarray(x, np.float64), np.asarray(labels)
    valid = np.ones(len(x), bool) if mask is None else np.asarray(mask, bool)
    d = lambda i, j: float(np.sum((x[i] - x[j]) ** 2))  # noqa: E731
    idx = [i for i in range(len(x)) if valid[i]]
    pos = {a: [p for p in idx if p != a and labels[p] == labels[a]] for a in idx}
    neg = {a: [n for n in idx if labels[n] != labels[a]] for a in idx}
    if mining == "batch_all":
        values = [d(a, p) - d(a, n) + margin for a in idx for p in pos[a] for n in neg[a]]
        positive = [v for v in values if v > 0]
        return sum(positive) / max(len(positive), 1)
    if mining == "batch_hard":
        values = [max(max(d(a, p) for p in pos[a]) - min(d(a, n) for n in neg[a]) + margin, 0)
                  for a in idx if pos[a] and neg[a]]
        return sum(values) / max(len(values), 1)
    values = []
    for a in idx:
        for p in pos[a]:
            if not neg[a]:
                continue
            farther = [d(a, n) for n in neg[a] if d(a, n) > d(a, p)]
            chosen = min(farther) if farther else max(d(a, n) for n in neg[a])
            values.append(max(d(a, p) - chosen + margin, 0))
    return sum(values) / max(len(values), 1)


@pytest.mark.parametrize("mining", losses.TRIPLET_MINING)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mining_matches_brute_force(mining, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10, 3)).astype(np.float32) * 0.5
    labels = rng.integers(0, 3, size=10)
    mask = (rng.random(10) < 0.8).astype(np.float32)
    for margin in (0.2, 1.0):
        got = losses.mined_triplet_loss(jnp.asarray(x), jnp.asarray(labels), margin, mining)
        assert float(got) == pytest.approx(_brute_force(x, labels, margin, mining), rel=1e-4,
                                           abs=1e-6)
        got = losses.mined_triplet_loss(jnp.asarray(x), jnp.asarray(labels), margin, mining,
                                        jnp.asarray(mask))
        assert float(got) == pytest.approx(_brute_force(x, labels, margin, mining, mask),
                                           rel=1e-4, abs=1e-6)


def test_batch_all_fraction_of_active_triplets():
    # 1-D: label 0 at 0 and 1, label 1 at 1.1. Triplets (a,p,n): (0,1,2): 1 - 1.21 + .2 < 0;
    # (1,0,2): 1 - 0.01 + .2 = 1.19 > 0; 2 has no positive. 1 of the 2 valid triplets active,
    # and the mean is over the active one only.
    x = jnp.array([[0.0], [1.0], [1.1]])
    loss, fraction = losses.batch_all_triplet_loss(x, jnp.array([0, 0, 1]), 0.2)
    assert float(fraction) == pytest.approx(0.5)
    assert float(loss) == pytest.approx(1.19, rel=1e-5)


@pytest.mark.parametrize("mining", losses.TRIPLET_MINING)
def test_coinciding_embeddings_keep_finite_gradients(mining):
    x = jnp.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # two coinciding pairs
    labels = jnp.array([0, 0, 1, 0])
    assert float(losses.pairwise_squared_distances(x)[0, 1]) == 0.0
    grad = jax.grad(lambda e: losses.mined_triplet_loss(e, labels, 0.2, mining))(x)
    assert np.all(np.isfinite(np.asarray(grad)))
    grad = jax.grad(lambda e: faces.l2_normalize(e).sum())(jnp.zeros((1, 3)))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_unknown_mining_names_the_choices():
    with pytest.raises(ValueError, match="semi_hard"):
        losses.mined_triplet_loss(jnp.zeros((2, 2)), jnp.array([0, 1]), 0.2, "hardest")


# --- the verification protocol on a hand-made case ----------------------------------------

def test_make_pairs_all_positives_and_as_many_seeded_negatives():
    labels = np.array([0, 0, 0, 1, 1, 2])  # positives: 3 + 1 = 4
    pairs, same = faces.make_pairs(labels, seed=3)
    assert same.sum() == 4 and (~same).sum() == 4
    assert {tuple(sorted(p)) for p in pairs[same]} == {(0, 1), (0, 2), (1, 2), (3, 4)}
    assert np.all(labels[pairs[~same, 0]] != labels[pairs[~same, 1]])
    again, _ = faces.make_pairs(labels, seed=3)
    np.testing.assert_array_equal(pairs, again)


def test_kfold_accuracy_hand_made():
    # 10 pairs in 10 folds of 1. Positives at d = 0..4, negatives at 5.5..8.5 and one at 0.5.
    # Whichever pair is left out, the best threshold on the other 9 is the midpoint between
    # the largest positive and the smallest negative above it (at most the 0.5 negative
    # wrong; below 0.5 at least 3 positives are wrong): 4.75, or 4.25 without the positive
    # at 4, or 5.25 without the negative at 5.5 -- each still classifies the held-out pair
    # right. Only the 0.5 negative is wrong: folds 9 x 1.0 and 1 x 0.0 -> mean 0.9, std 0.3.
    # (Negatives at 5..8 would fail the fold of 5: its threshold (4+6)/2 = 5 accepts d = 5.)
    d = np.array([0, 1, 2, 3, 4, 5.5, 6.5, 7.5, 8.5, 0.5])
    same = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool)
    result = faces.kfold_accuracy(d, same, num_folds=10)
    assert result["accuracy_mean"] == pytest.approx(0.9)
    assert result["accuracy_std"] == pytest.approx(0.3)
    assert result["thresholds"] == [4.75] * 4 + [4.25, 5.25] + [4.75] * 4


def test_val_at_far_hand_made():
    # Negatives at 1.5, 10, 11, ..., 18 (10 of them); positives at 1, 2, 3, 4.
    negatives = np.array([1.5, *range(10, 19)], float)
    positives = np.array([1, 2, 3, 4], float)
    d = np.concatenate([positives, negatives])
    same = np.concatenate([np.ones(4, bool), np.zeros(10, bool)])
    # FAR <= 0.01 (less than 1 of 10 negatives): accept only d <= 1 -> VAL 1/4.
    strict = faces.val_at_far(d, same, 0.01)
    assert strict["val"] == pytest.approx(0.25) and strict["far"] == 0.0
    assert strict["num_negatives"] == 10
    # FAR <= 0.1 allows the negative at 1.5: threshold 4 accepts all positives.
    loose = faces.val_at_far(d, same, 0.1)
    assert loose["val"] == pytest.approx(1.0) and loose["far"] == pytest.approx(0.1)
    roc = faces.roc_curve(d, same)
    assert roc["far"][0] == 0 and roc["val"][0] == 0 and roc["val"][-1] == 1
    assert np.all(np.diff(roc["far"]) >= 0) and np.all(np.diff(roc["val"]) >= 0)


def test_verify_threshold():
    a = jnp.array([[0.0, 0.0], [0.0, 0.0]])
    b = jnp.array([[0.3, 0.4], [0.6, 0.8]])  # d = 0.25, 1.0
    np.testing.assert_array_equal(np.asarray(faces.verify(a, b, 0.5)), [True, False])


# --- recognition with rejection -----------------------------------------------------------

def test_recognize_with_rejection_hand_made():
    database = faces.enroll(np.array([[1.0, 0.0], [0.0, 1.0]]), ["ann", "bob"])
    name, distance = faces.recognize(np.array([0.9, 0.1]), database, threshold=0.1)
    assert name == "ann" and distance == pytest.approx(0.02)
    names, distances = faces.recognize(
        np.array([[0.1, 0.8], [-1.0, 0.0]]), database, threshold=0.1)
    assert names == ["bob", faces.NOT_RECOGNISED]
    np.testing.assert_allclose(distances, [0.05, 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="one image per person"):
        faces.enroll(np.zeros((2, 2)), ["ann", "ann"])


def test_one_shot_and_open_set_on_separated_clusters():
    # 10 people, 4 images each, tight clusters on orthogonal axes: perfect one-shot; impostors
    # lie at squared distance ~2 from every enrolled person, far beyond any genuine distance.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 4)
    emb = np.eye(10)[labels] + 0.01 * rng.normal(size=(40, 10))
    assert faces.one_shot_accuracy(emb, labels, draws=5)["accuracy_mean"] == 1.0
    result = faces.open_set_rejection(emb, labels, draws=20)
    assert result["rejection_mean"] == 1.0 and result["accepted_identification_mean"] == 1.0


# --- data: the sampler and the identity folders -------------------------------------------

def _make_folder(root, counts, size=(12, 10), mode="L"):
    from PIL import Image

    rng = np.random.default_rng(0)
    for person, count in counts.items():
        os.makedirs(root / person)
        for i in range(1, count + 1):
            shape = (size[0] + i, size[1]) + ((3,) if mode == "RGB" else ())  # mixed sizes
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
                root / person / f"{i}.png")


def test_read_identity_folder_reports_people_with_one_image(tmp_path):
    _make_folder(tmp_path, {"s1": 3, "s2": 1, "s3": 2, "s10": 0})
    with pytest.raises(ValueError, match=r"s2 \(1\), s10 \(0\)"):
        face_data.read_identity_folder(str(tmp_path), (8, 8))


def test_read_identity_folder_resizes_and_converts(tmp_path):
    _make_folder(tmp_path, {"s1": 3, "s2": 2}, mode="RGB")
    gray = face_data.read_identity_folder(str(tmp_path), (8, 6), channels=1)
    colour = face_data.read_identity_folder(str(tmp_path), (8, 6), channels=3)
    assert gray.images.shape == (5, 8, 6, 1) and colour.images.shape == (5, 8, 6, 3)
    assert 0.0 <= gray.images.min() and gray.images.max() <= 1.0
    np.testing.assert_array_equal(gray.labels, [0, 0, 0, 1, 1])
    assert gray.image_number("s2", 2) == 4


def test_parse_people_ranges():
    available = [f"s{i}" for i in range(1, 31)]
    assert face_data.parse_people("s1-s3,s10", available) == ["s1", "s2", "s3", "s10"]
    assert face_data.parse_people("", available)[:3] == ["s1", "s2", "s3"]
    with pytest.raises(ValueError, match="s31"):
        face_data.parse_people("s29-s31", available)


def _dataset(images_per_person=3, people=8, per_person=5):
    labels = np.repeat(np.arange(people), per_person).astype(np.int32)
    images = np.random.default_rng(0).random((len(labels), 4, 4, 1)).astype(np.float32)
    train = face_data.IdentityImages(images, labels, tuple(f"p{i}" for i in range(people)),
                                     tuple(f"p{label}/{i}.png" for i, label in enumerate(labels)))
    held = face_data.IdentityImages(images[:6], labels[:6] % 2, ("q0", "q1"),
                                    tuple(f"q{i % 2}/{i}.png" for i in range(6)))
    return face_data.IdentityDataset("toy", train, held, images_per_person)


def test_sampler_is_balanced_and_deterministic():
    dataset = _dataset()
    batches = dataset.train_batches(12, seed=5)  # P = 4 people x K = 3
    first = [next(batches) for _ in range(6)]
    for batch in first:
        people, counts = np.unique(batch["label"], return_counts=True)
        assert len(people) == 4 and np.all(counts == 3)
        np.testing.assert_array_equal(batch["label"], np.repeat(batch["label"][::3], 3))
    resumed = next(dataset.train_batches(12, seed=5, start_step=4))
    np.testing.assert_array_equal(resumed["image"], first[4]["image"])
    other = next(dataset.train_batches(12, seed=6))
    assert not np.array_equal(other["image"], first[0]["image"])
    halves = [next(dataset.train_batches(12, seed=5, process_index=i, process_count=2))
              for i in range(2)]
    np.testing.assert_array_equal(np.concatenate([h["label"] for h in halves]),
                                  first[0]["label"])
    with pytest.raises(ValueError, match="images_per_person"):
        next(dataset.train_batches(10, seed=0))


def test_eval_batches_cover_held_out_people_once():
    batches = list(_dataset().eval_batches(4))
    assert sum(b["mask"].sum() for b in batches) == 6
    np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 0, 0])


def test_read_pairs_file(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2 1\ns1 1 2\ns1 3 s2 4\n")
    pairs, folds = faces.read_pairs_file(str(path))
    assert folds == 2 and pairs == [("s1", 1, "s1", 2), ("s1", 3, "s2", 4)]


def test_siamese_pair_shares_parameters():
    model = faces.FaceEncoder("lenet5", 8, {"conv_impl": "xla"})
    x = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 1)), jnp.float32)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    emb = model.apply(variables, x, train=False)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(emb), axis=1), 1.0, rtol=1e-5)
    d = faces.siamese_distance(model, variables, x, x[::-1])
    np.testing.assert_allclose(np.asarray(d), np.sum((emb - emb[::-1]) ** 2, 1), rtol=1e-5)
    assert float(faces.siamese_distance(model, variables, x, x)[0]) == 0.0
    # flip_average: the same parameters, and f(x) == f(mirror x) at inference.
    mirrored = faces.FaceEncoder("lenet5", 8, {"conv_impl": "xla"}, flip_average=True)
    a = mirrored.apply(variables, x, train=False)
    b = mirrored.apply(variables, x[:, :, ::-1], train=False)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    assert not np.allclose(np.asarray(a), np.asarray(emb), atol=1e-3)


def test_trunk_heads_parameter_counts_and_projection():
    """LeNet-5's trunk at 64x64 ends at 13x13x16; 'flatten' projects all 2,704 values,
    'avg' the 16 channel means (counts by hand: conv1 5*5*1*6+6, conv2 5*5*6*16+16)."""
    x = jnp.asarray(np.random.default_rng(1).random((3, 64, 64, 1)), jnp.float32)
    trunk_params = (5 * 5 * 1 * 6 + 6) + (5 * 5 * 6 * 16 + 16)
    expected = {"flatten": trunk_params + 13 * 13 * 16 * 8 + 8,
                "avg": trunk_params + 16 * 8 + 8}
    for head, count in expected.items():
        model = faces.FaceEncoder("lenet5", 8, {"conv_impl": "xla"}, head=head)
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        assert counting.count_params(variables) == count
        # The embedding is l2norm(W . pooled trunk features + b), recomputed in numpy.
        params = variables["params"]
        fmap = np.asarray(models.get_trunk("lenet5", conv_impl="xla").apply(
            {"params": params["LeNet5_0"]}, x, train=False))
        vector = fmap.reshape(3, -1) if head == "flatten" else fmap.mean(axis=(1, 2))
        z = vector @ np.asarray(params["embedding"]["kernel"]) + np.asarray(
            params["embedding"]["bias"])
        np.testing.assert_allclose(np.asarray(model.apply(variables, x, train=False)),
                                   z / np.linalg.norm(z, axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(ValueError, match="head.*'flatten', 'avg', 'classifier'.*'mean'"):
        faces.FaceEncoder("lenet5", 8, head="mean").init(jax.random.PRNGKey(0), x, train=False)


@pytest.mark.parametrize("head", faces.HEADS)
def test_benchmark_torch_encoder_is_the_same_network(head):
    """benchmarks/faces.py compares like with like: equal parameter counts per head."""
    pytest.importorskip("torch")
    from benchmarks import torch_models

    shape = (64, 64, 1)
    model = faces.FaceEncoder("lenet5", 64, {"conv_impl": "xla"}, head=head)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                                  jnp.zeros((1, *shape)), train=False))
    net = torch_models.embedding_encoder("lenet5", 64, shape, head)
    assert counting.count_params(variables) == sum(p.numel() for p in net.parameters())


def test_att_faces_layout(shared_data):
    root = os.path.join(shared_data, "att_faces")
    data = face_data.read_identity_folder(root, (16, 16), people=["s1", "s21"])
    assert data.images.shape == (20, 16, 16, 1) and data.names == ("s1", "s21")


@pytest.mark.slow
def test_experiment_train_evaluate_recognize(shared_data, tmp_path):
    """A few-step run: `evaluate` (jit apply of the checkpoint) reproduces the loop's gathered
    held-out figures, and `recognize` names an enrolled person's own enrolment image and
    says where its threshold came from."""
    import json

    from conftest import run_module

    data = os.path.join(shared_data, "att_faces")
    workdir = str(tmp_path / "run")
    run_module("experiments.faces", "train", f"--data={data}", f"--workdir={workdir}",
               "--config=experiments/configs/faces_att.py:train_steps=20,warmup_steps=2,"
               "image_size=(32,32),progress=False,tensorboard=False,conv_impl=xla")
    run_module("experiments.faces", "evaluate", f"--workdir={workdir}")
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        gathered = json.load(f)
    with open(os.path.join(workdir, "faces_eval.json")) as f:
        report = json.load(f)
    for key, value in gathered.items():  # the model's and the three baselines' figures
        if key != "step":
            assert report["metrics"][key] == pytest.approx(value, abs=1e-6), key
    database = tmp_path / "db"
    for person in ("s21", "s22"):
        os.makedirs(database / person)
        os.symlink(os.path.join(data, person, "1.pgm"), database / person / "1.pgm")
    out = run_module("experiments.faces", "recognize", f"--workdir={workdir}",
                     f"--database={database}", f"--image={os.path.join(data, 's22', '1.pgm')}",
                     "--threshold=0.5")
    assert out.stdout.strip().splitlines()[-1] == (
        "s22  (distance 0.0000, threshold 0.5000: --threshold)")
