"""Parameter and multiplication counts from the lecture."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import counting


def test_ten_3x3x3_filters_have_280_parameters():
    assert counting.conv_params(3, 3, 10) == 280
    conv = nn.Conv(10, (3, 3))
    variables = jax.eval_shape(conv.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    assert counting.count_params(variables) == 280


def test_inception_5x5_cost_and_bottleneck():
    direct = counting.conv_macs(28, 5, 192, 32)
    assert direct == 120_422_400  # the lecture's "120 M"
    reduce_1x1 = counting.conv_macs(28, 1, 192, 16)
    conv_5x5 = counting.conv_macs(28, 5, 16, 32)
    assert (reduce_1x1, conv_5x5) == (2_408_448, 10_035_200)  # "2.4 M + 10 M"
    assert reduce_1x1 + conv_5x5 == 12_443_648


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3), padding="VALID", name="conv")(x)
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(5, name="fc")(x)


def test_summary_rows_counts_and_macs():
    rows = counting.summary(_Tiny(), (6, 6, 2))
    assert [row.name for row in rows] == ["input", "conv", "bn", "fc"]
    assert [row.shape for row in rows] == [(6, 6, 2), (4, 4, 4), (4, 4, 4), (5,)]
    assert [row.params for row in rows] == [0, 3 * 3 * 2 * 4 + 4, 8, 64 * 5 + 5]
    assert [row.macs for row in rows] == [0, 4 * 4 * 4 * 3 * 3 * 2, 0, 64 * 5]
    table = counting.format_table(rows)
    assert "409" in table and "total" in table and "(4, 4, 4)" in table
    assert counting.count_params(
        jax.eval_shape(_Tiny().init, jax.random.key(0), jnp.zeros((1, 6, 6, 2)))
    ) == counting.total_params(rows) == 76 + 8 + 325


def test_lecture_input_sizes_and_the_dense_layer_on_a_megapixel_image():
    """64x64x3 = 12,288 inputs; 1000x1000x3 = 3,000,000, and 1,000 dense units on them."""
    small = jnp.zeros((64, 64, 3))
    large = jax.ShapeDtypeStruct((1000, 1000, 3), jnp.float32)
    assert small.size == 64 * 64 * 3 == 12_288
    assert math.prod(large.shape) == 3_000_000
    dense = nn.Dense(1000, use_bias=False)
    variables = jax.eval_shape(dense.init, jax.random.key(0), jnp.zeros((1, 3_000_000)))
    assert counting.count_params(variables) == counting.dense_params(3_000_000, 1000, bias=False)
    assert counting.count_params(variables) == 3_000_000_000  # "3 billion" weights


def test_why_convolutions_456_parameters_against_a_dense_layer():
    """A 5x5 conv 3->6 on 32x32x3: 456 parameters; a dense layer from the 3,072 inputs to its
    28x28x6 = 4,704 outputs: 14,450,688 weights, 14,455,392 with biases."""
    conv = nn.Conv(6, (5, 5), padding="VALID")
    out, variables = jax.eval_shape(lambda k: conv.init_with_output(k, jnp.zeros((1, 32, 32, 3))),
                                    jax.random.key(0))
    assert out.shape == (1, 28, 28, 6)
    assert counting.count_params(variables) == counting.conv_params(5, 3, 6) == 456
    inputs, outputs = 32 * 32 * 3, math.prod(out.shape[1:])
    assert (inputs, outputs) == (3_072, 4_704)
    assert counting.dense_params(inputs, outputs, bias=False) == 3_072 * 4_704 == 14_450_688
    assert counting.dense_params(inputs, outputs) == 14_450_688 + 4_704 == 14_455_392
