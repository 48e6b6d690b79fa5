"""The fused conv -> max-pool -> ReLU kernel against PyTorch's own ops: same numbers, forward and backward."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tenfold.kernels import build
from tenfold.kernels.fused import ConvPoolReLU, applies
from tenfold.models import conv2d_maxpool, create_model

pytestmark = pytest.mark.skipif(not build.available(), reason="no C compiler for tenfold's kernels")


def reference(x, w, b):
    return F.relu(F.max_pool2d(F.conv2d(x, w, b, padding=w.shape[-1] // 2), 2))


@pytest.fixture(params=build.available_isas())
def isa(request, monkeypatch):
    """Each build this CPU can run: AVX-512 (16 floats a register), AVX2 (8) and the 128-bit one (4)."""
    monkeypatch.setenv("TENFOLD_CPU_ISA", request.param)
    assert build.load_library().isa == request.param
    return request.param


@pytest.mark.parametrize("cin,cout,k,h,w,input_grad", [
    (3, 6, 5, 32, 32, False),   # LeNet's first layer
    (6, 16, 5, 16, 16, True),   # LeNet's second layer
    (3, 6, 5, 32, 32, True),
    (2, 9, 3, 20, 36, True),    # more than 8 output channels, columns past a full vector
    (1, 3, 1, 6, 10, True),
    (4, 12, 7, 14, 18, True),   # a kernel size with no specialised copy
    (16, 8, 5, 8, 8, True),     # patch rows too long for the sparse weight gradient: the dense one
    (6, 16, 5, 48, 40, True),   # several register blocks of two vectors, then one, then leftover columns
    (12, 5, 3, 10, 70, True),   # a sparse gradient in row groups on the 8-float build (the dense one on 4)
    (7, 2, 5, 8, 8, False),     # k * cin = 35: more vectors per patch row than the 16-float build needs
])
def test_matches_pytorch_forward_and_backward(cin, cout, k, h, w, input_grad, isa):
    torch.manual_seed(0)
    x = torch.randn(9, cin, h, w).contiguous(memory_format=torch.channels_last).requires_grad_(input_grad)
    weight = (torch.randn(cout, cin, k, k) * 0.3).requires_grad_()
    bias = torch.randn(cout).requires_grad_()
    inputs = [x, weight, bias] if input_grad else [weight, bias]
    want = reference(x, weight, bias)
    grad = torch.randn_like(want)
    got = ConvPoolReLU.apply(x, weight, bias)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(torch.autograd.grad(got, inputs, grad), torch.autograd.grad(want, inputs, grad)):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())


def test_ties_send_the_gradient_where_pytorch_does(isa):
    x = torch.zeros(2, 1, 4, 4).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight = torch.ones(2, 1, 3, 3, requires_grad=True)
    bias = torch.tensor([1.0, -1.0], requires_grad=True)  # the second channel is all zero after the ReLU
    grad = torch.ones(2, 2, 2, 2)
    mine = torch.autograd.grad(ConvPoolReLU.apply(x, weight, bias), [x, weight, bias], grad)
    theirs = torch.autograd.grad(reference(x, weight, bias), [x, weight, bias], grad)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b)


def test_same_result_on_every_run(isa):
    torch.manual_seed(0)
    x = torch.randn(64, 6, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    weight, bias = torch.randn(16, 6, 5, 5, requires_grad=True), torch.randn(16, requires_grad=True)
    runs = [torch.autograd.grad(ConvPoolReLU.apply(x, weight, bias).sum(), [x, weight, bias]) for _ in range(3)]
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


def test_used_only_where_it_computes_the_same_thing():
    x = torch.randn(2, 3, 8, 8)
    block = conv2d_maxpool(4, 3, 1, 2, 2)
    block(x)  # materialise the lazy convolution
    conv, pool = block[0], block[1][-1]
    assert applies(x, conv, pool)
    assert not applies(torch.randn(2, 3, 7, 8), conv, pool)             # odd size: SAME pooling pads
    assert not applies(x.double(), conv, pool)
    strided = conv2d_maxpool(4, 3, 2, 2, 2)
    strided(x)
    assert not isinstance(strided[0], torch.nn.Conv2d) or not applies(x, strided[0], strided[1][-1])
    pool3 = conv2d_maxpool(4, 3, 1, 3, 2)
    pool3(x)
    assert not applies(x, pool3[0], pool3[1][-1])


def test_lenet5_gives_the_same_training_step_with_and_without_kernels(monkeypatch):
    import tenfold.kernels.fused as fused

    def one_step(use_kernels):
        if not use_kernels:
            monkeypatch.setattr(fused, "applies", lambda *a: False)
        torch.manual_seed(0)
        model = create_model("lenet5", keep_prob=1.0).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.randn(32, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), torch.arange(32) % 10)
        loss.backward()
        opt.step()
        monkeypatch.undo()
        return loss.item(), [p.detach().clone() for p in model.parameters()]
    (loss_a, a), (loss_b, b) = one_step(True), one_step(False)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_no_compiler_means_pytorchs_ops_and_one_warning(tmp_path):
    code = ("import torch, tenfold.kernels.build as b, tenfold.models as m; "
            "print(b.available()); print(m.create_model('lenet5')(torch.randn(2, 3, 32, 32)).shape)")
    env = {"TENFOLD_HOME": str(tmp_path), "CC": "/bin/false", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["False", "torch.Size([2, 10])"]
    assert result.stderr.count("warning: tenfold's CPU kernels are unavailable") == 1


def test_kernel_isa_follows_the_cpu_and_is_capped_on_request():
    zen4 = "flags : fpu avx2 fma avx512f avx512bw avx512vl avx512_bf16"
    zen3 = "flags : fpu avx2 fma"
    assert build.kernel_isa(zen4, {}) == "avx512" and build.kernel_isa(zen3, {}) == "avx2"
    assert build.kernel_isa("flags : fpu sse4_2", {}) == "generic"
    assert build.kernel_isa(zen4, {"ATEN_CPU_CAPABILITY": "avx2"}) == "avx2"  # emulating an AVX2 machine
    assert build.kernel_isa(zen4, {"TENFOLD_CPU_ISA": "generic"}) == "generic"
    assert build.kernel_isa(zen3, {"TENFOLD_CPU_ISA": "avx512"}) == "avx2"    # never wider than the CPU
    assert "-DTENFOLD_VL=8" in build.build_flags("avx2") and "-mavx2" in build.build_flags("avx2")
    assert "-mavx512f" not in " ".join(build.build_flags("avx2")) and "-march=native" not in build.build_flags("avx2")
    assert build.kernel_isa(zen4, {"ATEN_CPU_CAPABILITY": "default"}) == "generic"
    assert build.library_path("avx2") != build.library_path("avx512")


def test_switched_off_by_environment(tmp_path):
    code = "import tenfold.kernels.build as b; print(b.available())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"TENFOLD_HOME": str(tmp_path), "TENFOLD_KERNELS": "0", "PATH": "/usr/bin:/bin"})
    assert result.stdout.strip() == "False" and result.stderr == ""
