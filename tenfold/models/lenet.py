"""The seed's network: the Udacity CIFAR-10 project's LeNet-5-style CNN."""
from torch import nn

from tenfold.models.blocks import conv2d_maxpool, dropout, flatten, fully_conn, output
from tenfold.models.registry import register_model


@register_model
def lenet5(num_classes: int = 10, keep_prob: float = 0.5) -> nn.Module:
    """6 filters 5x5 -> pool 2 -> 16 filters 5x5 -> pool 2 -> 120 -> dropout -> 84 -> dropout -> classes."""
    return nn.Sequential(
        conv2d_maxpool(6, (5, 5), (1, 1), (2, 2), (2, 2)),   # (N, 6, 16, 16) for 32x32 input
        conv2d_maxpool(16, (5, 5), (1, 1), (2, 2), (2, 2)),  # (N, 16, 8, 8)
        flatten(),                                            # (N, 1024)
        fully_conn(120), dropout(keep_prob),
        fully_conn(84), dropout(keep_prob),
        output(num_classes),
    )
