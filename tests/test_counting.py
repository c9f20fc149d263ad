"""Parameter and multiplication counts from the lecture."""

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
