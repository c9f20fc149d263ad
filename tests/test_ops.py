"""The lecture's convolution arithmetic, checked number by number."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ops

IMAGE_6X6 = [
    [3, 0, 1, 2, 7, 4],
    [1, 5, 8, 9, 3, 1],
    [2, 7, 2, 5, 1, 3],
    [0, 1, 3, 1, 7, 8],
    [4, 2, 1, 6, 2, 8],
    [2, 4, 5, 2, 3, 9],
]


def conv_numpy(image, kernel, stride=1):
    """Brute-force valid cross-correlation, independent of JAX."""
    image, kernel = np.asarray(image, float), np.asarray(kernel, float)
    f = kernel.shape[0]
    n_out = (image.shape[0] - f) // stride + 1
    m_out = (image.shape[1] - f) // stride + 1
    out = np.zeros((n_out, m_out))
    for i in range(n_out):
        for j in range(m_out):
            patch = image[i * stride : i * stride + f, j * stride : j * stride + f]
            out[i, j] = np.sum(patch * kernel)
    return out


def test_vertical_edge_filter_on_lecture_image():
    out = ops.conv2d(IMAGE_6X6, ops.EDGE_FILTERS["vertical"])
    expected = [[-5, -4, 0, 8], [-10, -2, 2, 3], [0, -2, -4, -7], [-3, -2, -3, -16]]
    np.testing.assert_array_equal(np.asarray(out), expected)
    np.testing.assert_array_equal(expected, conv_numpy(IMAGE_6X6, ops.EDGE_FILTERS["vertical"]))


def test_vertical_edge_on_step_images():
    step6 = [[10, 10, 10, 0, 0, 0]] * 6
    out = np.asarray(ops.conv2d(step6, ops.EDGE_FILTERS["vertical"]))
    np.testing.assert_array_equal(out, [[0, 30, 30, 0]] * 4)
    # The slide draws a 4x4 result for the 7x7 images; a valid 3x3 convolution of a
    # 7x7 image is 5x5 (7 - 3 + 1), so we check the 5x5 the arithmetic gives.
    step7 = [[10, 10, 10, 0, 0, 0, 0]] * 7
    out7 = np.asarray(ops.conv2d(step7, ops.EDGE_FILTERS["vertical"]))
    assert out7.shape == (5, 5)
    np.testing.assert_array_equal(out7, [[0, 30, 30, 0, 0]] * 5)
    mirror7 = [[0, 0, 0, 10, 10, 10, 10]] * 7
    np.testing.assert_array_equal(
        np.asarray(ops.conv2d(mirror7, ops.EDGE_FILTERS["vertical"])), [[0, -30, -30, 0, 0]] * 5
    )


def test_horizontal_edge_on_checker_image():
    checker = [[10, 10, 10, 0, 0, 0]] * 3 + [[0, 0, 0, 10, 10, 10]] * 3
    out = np.asarray(ops.conv2d(checker, ops.EDGE_FILTERS["horizontal"]))
    expected = [[0, 0, 0, 0], [30, 10, -10, -30], [30, 10, -10, -30], [0, 0, 0, 0]]
    np.testing.assert_array_equal(out, expected)


def test_edge_filters_are_the_lectures():
    np.testing.assert_array_equal(ops.EDGE_FILTERS["sobel"], [[1, 0, -1], [2, 0, -2], [1, 0, -1]])
    np.testing.assert_array_equal(
        ops.EDGE_FILTERS["scharr"], [[3, 0, -3], [10, 0, -10], [3, 0, -3]]
    )
    np.testing.assert_array_equal(ops.EDGE_FILTERS["horizontal"], ops.EDGE_FILTERS["vertical"].T)
    with pytest.raises(ValueError):
        ops.EDGE_FILTERS["sobel"][0, 0] = 5


def test_strided_convolution_7x7_stride_2():
    image = [
        [2, 3, 7, 4, 6, 2, 9],
        [6, 6, 9, 8, 7, 4, 3],
        [3, 4, 8, 3, 8, 9, 7],
        [7, 8, 3, 6, 6, 3, 4],
        [4, 2, 1, 8, 3, 4, 6],
        [3, 2, 4, 1, 9, 8, 3],
        [0, 1, 3, 9, 2, 1, 4],
    ]
    kernel = [[3, 4, 4], [1, 0, 2], [-1, 0, 3]]
    out = np.asarray(ops.conv2d(image, kernel, stride=2))
    # The slide prints 83 at (0, 2) and 127 at (1, 2). Both are arithmetic slips:
    # rows 0-2, cols 4-6 give (18+8+36) + (7+0+6) + (-8+0+21) = 62 + 13 + 13 = 88, and
    # rows 2-4, cols 4-6 give 117; the brute-force loop below agrees with us.
    slide = np.array([[91, 100, 83], [69, 91, 127], [44, 72, 74]])
    expected = np.array([[91, 100, 88], [69, 91, 117], [44, 72, 74]])
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(conv_numpy(image, kernel, stride=2), expected)
    agree = np.ones((3, 3), bool)
    agree[0, 2] = agree[1, 2] = False
    np.testing.assert_array_equal(out[agree], slide[agree])
    assert out[0, 2] != slide[0, 2] and out[1, 2] != slide[1, 2]


def test_pooling_lecture_example():
    x = [[1, 3, 2, 1], [2, 9, 1, 1], [1, 3, 2, 3], [5, 6, 1, 2]]
    np.testing.assert_array_equal(np.asarray(ops.max_pool(x, 2, 2)), [[9, 2], [6, 3]])
    np.testing.assert_allclose(np.asarray(ops.avg_pool(x, 2, 2)), [[3.75, 1.25], [3.75, 2]])


def test_pooling_is_per_channel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 5, 3)).astype(np.float32)
    out = np.asarray(ops.max_pool(x, 3, 1))
    expected = np.zeros((2, 3, 3, 3), np.float32)
    for i, j in itertools.product(range(3), range(3)):
        expected[:, i, j, :] = x[:, i : i + 3, j : j + 3, :].max(axis=(1, 2))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "n,f,p,s,expected",
    [(6, 3, 0, 1, 4), (6, 3, 1, 1, 6), (7, 3, 0, 2, 3), (32, 5, 0, 1, 28), (28, 2, 0, 2, 14),
     (224, 11, 2, 4, 55), (39, 3, 0, 1, 37), (37, 5, 0, 2, 17), (17, 5, 0, 2, 7)],
)
def test_conv_output_size_known_values(n, f, p, s, expected):
    assert ops.conv_output_size(n, f, p, s) == expected


def test_conv_output_size_same_padding():
    for n, f in itertools.product([5, 6, 32], [1, 3, 5, 7]):
        assert ops.conv_output_size(n, f, "same") == n
    assert ops.conv_output_size(6, 3, "valid") == 4


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(n=5, f=7, p=0, s=1), "larger than the padded input"),
        (dict(n=5, f=3, p=0, s=0), "stride"),
        (dict(n=5, f=4, p="same", s=1), "odd"),
        (dict(n=5, f=3, p=-1, s=1), "padding"),
        (dict(n=5, f=3, p="full", s=1), "padding"),
    ],
)
def test_conv_output_size_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ops.conv_output_size(**kwargs)


def test_conv_output_size_matches_lax():
    for n, f, p, s in itertools.product([5, 8, 11], [1, 2, 3, 5], [0, 1, 2], [1, 2, 3]):
        if f > n + 2 * p:
            continue
        x = jax.ShapeDtypeStruct((1, n, n, 1), jnp.float32)
        w = jax.ShapeDtypeStruct((f, f, 1, 1), jnp.float32)
        y = jax.eval_shape(lambda x, w, s=s, p=p: jax.lax.conv_general_dilated(
            x, w, (s, s), [(p, p), (p, p)], dimension_numbers=("NHWC", "HWIO", "NHWC")), x, w)
        assert y.shape[1] == ops.conv_output_size(n, f, p, s), (n, f, p, s)


def test_conv2d_multichannel_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 7, 6, 3)).astype(np.float32)
    w = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    out = np.asarray(ops.conv2d(x, w, stride=2, padding=1))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    assert out.shape == (2, 4, 3, 4)
    for b, i, j, o in itertools.product(range(2), range(4), range(3), range(4)):
        patch = padded[b, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]
        assert out[b, i, j, o] == pytest.approx(float(np.sum(patch * w[..., o])), abs=1e-4)


def test_conv2d_same_keeps_size_and_checks_channels():
    x = np.ones((1, 6, 6, 3), np.float32)
    assert ops.conv2d(x, np.ones((5, 5, 3, 2)), padding="SAME").shape == (1, 6, 6, 2)
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d(x, np.ones((3, 3, 2, 2)))


def test_receptive_field_of_stacked_3x3():
    assert ops.receptive_field([(3, 1)]) == 3
    assert ops.receptive_field([(3, 1)] * 2) == 5
    assert ops.receptive_field([(3, 1)] * 3) == 7
    # AlexNet conv1 (11/4) + pool (3/2) + conv2 (5/1): 11 + 2*4 + 4*8 = 51.
    assert ops.receptive_field([(11, 4), (3, 2), (5, 1)]) == 51
