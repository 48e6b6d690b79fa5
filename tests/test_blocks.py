import math

import pytest
import torch

from tenfold.models import conv2d_maxpool, dropout, flatten, fully_conn, output
from tenfold.models.blocks import same_padding


def test_conv2d_maxpool_matches_the_original_projects_check():
    # The Udacity project's unit test: 32x32x5 in, 10 outputs, kernel 2x2 stride 4x4, pool 2x2/2x2 -> 4x4x10.
    block = conv2d_maxpool(10, (2, 2), (4, 4), (2, 2), (2, 2))
    assert block(torch.randn(7, 5, 32, 32)).shape == (7, 10, 4, 4)


@pytest.mark.parametrize("size,k,s", [(32, 5, 1), (32, 2, 4), (31, 3, 2), (17, 4, 3), (8, 1, 1), (9, 3, 3)])
def test_same_padding_gives_ceil_of_size_over_stride(size, k, s):
    block = conv2d_maxpool(4, k, s, 1, 1)
    assert block(torch.randn(2, 3, size, size)).shape[-2:] == (math.ceil(size / s),) * 2
    pooled = conv2d_maxpool(4, 1, 1, k, s)(torch.randn(2, 3, size, size))
    assert pooled.shape[-2:] == (math.ceil(size / s),) * 2


def test_same_padding_matches_tensorflow_split():
    # TensorFlow puts the odd extra pixel after: size 32, k 2, stride 1 -> (0, 1).
    assert same_padding(32, 2, 1) == (0, 1)
    assert same_padding(32, 5, 1) == (2, 2)
    assert same_padding(32, 2, 4) == (0, 0)


def test_relu_after_pool_equals_relu_before_pool():
    torch.manual_seed(0)
    block = conv2d_maxpool(6, 5, 1, 2, 2)
    x = torch.randn(4, 3, 32, 32)
    out = block(x)
    conv = block[0]
    reference = torch.nn.functional.max_pool2d(torch.relu(conv(x)), 2, 2)
    torch.testing.assert_close(out, reference)
    assert (out >= 0).all()


def test_pool_pads_with_minus_infinity_not_zero():
    # All-negative maps: a zero pad would win the max and change the result before ReLU.
    block = conv2d_maxpool(1, 1, 1, 3, 2)
    with torch.no_grad():
        block(torch.zeros(1, 1, 5, 5))
        block[0].weight.fill_(1.0)
        block[0].bias.fill_(0.0)
    pooled = block[1](block[0](-torch.ones(1, 1, 5, 5) - torch.arange(25.0).view(1, 1, 5, 5)))
    assert (pooled < 0).all()


def test_flatten_fully_conn_output_shapes():
    x = torch.randn(3, 16, 8, 8)
    flat = flatten()(x)
    assert flat.shape == (3, 1024)
    hidden = fully_conn(120)(flat)
    assert hidden.shape == (3, 120) and (hidden >= 0).all()
    logits = output(10)(hidden)
    assert logits.shape == (3, 10) and (logits < 0).any()  # no ReLU on the logits


def test_dropout_keep_prob():
    x = torch.ones(10000)
    d = dropout(0.75)
    d.train()
    kept = (d(x) != 0).float().mean().item()
    assert 0.72 < kept < 0.78
    d.eval()
    assert torch.equal(d(x), x)
    assert torch.equal(dropout(1.0).train()(x), x)


@pytest.mark.parametrize("keep_prob", [0.0, -0.1, 1.5])
def test_dropout_rejects_keep_prob_outside_0_1(keep_prob):
    with pytest.raises(ValueError, match="keep_prob"):
        dropout(keep_prob)
