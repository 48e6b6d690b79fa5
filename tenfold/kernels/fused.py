"""relu(maxpool2x2(conv_same(x))) for a conv block on the CPU, through the C kernel.

Exact to float32 rounding against PyTorch's conv -> max_pool2d -> relu (the tests compare both ways), and used
only where it applies: CPU float32, odd square kernel, stride 1, SAME padding, a 2x2 pool of stride 2 over even
sizes.
"""
from __future__ import annotations

import torch

from tenfold.kernels.build import load_library


def ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class ConvPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        lib = load_library()
        n, cin, h, w = x.shape
        cout, k = weight.shape[0], weight.shape[-1]
        xh = x.permute(0, 2, 3, 1).contiguous()  # NHWC; free when x is channels_last
        wt, b = weight.detach().contiguous(), bias.detach().contiguous()
        out = torch.empty(n, h // 2, w // 2, cout)
        arg = torch.empty(n, h // 2, w // 2, cout, dtype=torch.uint8)
        if lib.conv_pool_relu_forward(ptr(xh), ptr(wt), ptr(b), ptr(out), ptr(arg), n, h, w, cin, cout, k):
            raise MemoryError("tenfold's conv kernel could not allocate its buffers")
        ctx.save_for_backward(xh, out, arg)
        ctx.weight = wt
        ctx.shape = (n, h, w, cin, cout, k)
        return out.permute(0, 3, 1, 2)  # (N, Cout, H/2, W/2), channels_last in memory

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        lib = load_library()
        xh, out, arg = ctx.saved_tensors
        n, h, w, cin, cout, k = ctx.shape
        g = grad.permute(0, 2, 3, 1).contiguous()
        dw, db = torch.empty(cout, cin, k, k), torch.empty(cout)
        dx = wt_t = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty(n, h, w, cin)
            wt_t = ctx.weight.transpose(0, 1).flip(2, 3).contiguous()  # (cin, cout, k, k), flipped
        status = lib.conv_pool_relu_backward(ptr(xh), ptr(g), ptr(out), ptr(arg), ptr(wt_t) if dx is not None else None,
                                             ptr(dx) if dx is not None else None, ptr(dw), ptr(db),
                                             n, h, w, cin, cout, k)
        if status:
            raise MemoryError("tenfold's conv kernel could not allocate its buffers")
        return (dx.permute(0, 3, 1, 2) if dx is not None else None), dw, db


def applies(x: torch.Tensor, conv: torch.nn.Conv2d, pool: torch.nn.MaxPool2d) -> bool:
    """Whether the fused kernel computes exactly what conv -> pool -> relu would here."""
    k = conv.kernel_size
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
            and conv.weight.dtype == torch.float32 and conv.bias is not None
            and k[0] == k[1] and k[0] % 2 == 1 and conv.stride == (1, 1) and conv.dilation == (1, 1)
            and conv.groups == 1 and conv.padding == (k[0] // 2, k[1] // 2) and conv.padding_mode == "zeros"
            and pool_2x2(pool) and x.shape[2] % 2 == 0 and x.shape[3] % 2 == 0
            and not torch.is_autocast_enabled("cpu") and load_library() is not None)


def pool_2x2(pool: torch.nn.MaxPool2d) -> bool:
    two = lambda v: v in (2, (2, 2))  # noqa: E731
    return (isinstance(pool, torch.nn.MaxPool2d) and two(pool.kernel_size) and two(pool.stride)
            and pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)) and not pool.ceil_mode
            and not pool.return_indices)
