import pytest
import torch

from tenfold.errors import ConfigError
from tenfold.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_shape=(32, 32))
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    out = model(x)
    assert out.shape == (4, 7)
    torch.nn.functional.cross_entropy(out, torch.arange(4)).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]  # frozen ones (whitening, BN scales) get none
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_lenet5_is_the_seeds_network():
    model = create_model("lenet5", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(3, 6, (5, 5)), (6, 16, (5, 5))]
    assert [(l.in_features, l.out_features) for l in linears] == [(1024, 120), (120, 84), (84, 10)]
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == [0.5, 0.5]


def test_blocks_start_glorot_uniform_with_zero_biases():
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10)
    for layer in [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]:
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * (layer.weight[0, 0].numel() if layer.weight.dim() == 4 else 1)
        bound = (6 / (fan_in + fan_out)) ** 0.5
        assert torch.all(layer.bias == 0)
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound


def test_lenet5_adapts_to_other_image_sizes_and_keep_prob():
    model = create_model("lenet5", num_classes=3, image_shape=(48, 40), keep_prob=0.8)
    assert model(torch.randn(2, 3, 48, 40)).shape == (2, 3)
    assert [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)] == pytest.approx([0.2, 0.2])


def test_unknown_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'.*lenet5"):
        create_model("resnet9000")


NET = '''
from torch import nn
from tenfold.models import conv2d_maxpool, flatten, fully_conn, dropout, output

def conv_net(num_classes, keep_prob):
    return nn.Sequential(conv2d_maxpool(8, 3, 1, 2, 2), flatten(), fully_conn(32), dropout(keep_prob),
                         output(num_classes))

def wrong_outputs():
    return nn.Sequential(flatten(), output(5))

def not_a_module():
    return 42
'''


def test_user_network_from_a_file(tmp_path):
    (tmp_path / "net.py").write_text(NET)
    model = create_model(f"{tmp_path}/net.py:conv_net", num_classes=4, keep_prob=0.7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


@pytest.mark.parametrize("factory,message", [("wrong_outputs", "expected \\(2, 4\\)"),
                                             ("not_a_module", "not a torch.nn.Module"),
                                             ("missing", "no function 'missing'")])
def test_bad_user_networks_are_config_errors(tmp_path, factory, message):
    (tmp_path / "net.py").write_text(NET)
    with pytest.raises(ConfigError, match=message):
        create_model(f"{tmp_path}/net.py:{factory}", num_classes=4)
