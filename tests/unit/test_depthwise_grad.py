"""MobileNetV2's stride-2 depthwise convolutions take their bf16 CPU input gradient through a
fast stride-1 kernel (vsearch.models.mobilenet._StridedDepthwiseGrad): the same arithmetic as
ATen's slow kernel, the same parameters and state dict."""

import pytest
import torch
import torch.nn.functional as F

from vsearch.models import mobilenet
from vsearch.models.mobilenet import DepthwiseConv2d, _StridedDepthwiseGrad, build_features


def _grads(conv, x, grad_out, autocast: bool):
    x = x.detach().requires_grad_()
    conv.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y = conv(x)
    y.backward(grad_out.to(y.dtype))
    return y.detach(), x.grad, conv.weight.grad.clone(), y.grad_fn


@pytest.mark.parametrize("size", [16, 9])  # even and odd input sizes
@pytest.mark.parametrize("channels_last", [True, False])
def test_input_gradient_is_the_stride_1_correlation_of_the_spread_output_gradient(size, channels_last):
    """In float32 (no rounding to hide behind) the function's gradients equal ATen's."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, 8, size, size).contiguous(memory_format=fmt).requires_grad_()
    w = torch.randn(8, 1, 3, 3).requires_grad_()
    y_ref = F.conv2d(x, w, None, 2, 1, 1, 8)
    grad_out = torch.randn_like(y_ref)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, w), grad_out)
    y = _StridedDepthwiseGrad.apply(x, w)
    gx, gw = torch.autograd.grad(y, (x, w), grad_out)
    assert torch.equal(y, y_ref)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-6, atol=1e-6)
    assert gx.shape == x.shape and gw.shape == w.shape


def test_bf16_training_takes_the_fast_path_with_atens_forward_and_weight_gradient():
    torch.manual_seed(0)
    conv = DepthwiseConv2d(32, 32, 3, 2, 1, groups=32, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(8, 32, 16, 16).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn(8, 32, 8, 8)
    y, gx, gw, fn = _grads(conv, x, grad_out, autocast=True)
    assert "_StridedDepthwiseGrad" in type(fn).__name__
    mobilenet.FAST_STRIDED_DEPTHWISE_GRAD = False
    try:
        y_ref, gx_ref, gw_ref, fn_ref = _grads(conv, x, grad_out, autocast=True)
    finally:
        mobilenet.FAST_STRIDED_DEPTHWISE_GRAD = True
    assert "_StridedDepthwiseGrad" not in type(fn_ref).__name__
    assert y.dtype == gx.dtype == torch.bfloat16 and gw.dtype == torch.float32  # as autocast leaves them
    assert torch.equal(y, y_ref) and torch.equal(gw, gw_ref)
    # The input gradient: ATen's up to the last bit of a bf16 sum taken in another order.
    torch.testing.assert_close(gx.float(), gx_ref.float(), rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize("case", ["stride_1", "float32", "no_grad"])
def test_other_cases_are_atens_own_convolution(case):
    stride, autocast = (1, True) if case == "stride_1" else (2, case != "float32")
    conv = DepthwiseConv2d(16, 16, 3, stride, 1, groups=16, bias=False)
    x = torch.randn(2, 16, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.set_grad_enabled(case != "no_grad"):
        y = conv(x.requires_grad_(case != "no_grad"))
    assert y.grad_fn is None or "_StridedDepthwiseGrad" not in type(y.grad_fn).__name__
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        assert torch.equal(y.detach(), torch.nn.Conv2d.forward(conv, x.detach()))


def test_mobilenet_uses_it_for_every_depthwise_convolution_and_keeps_torchvisions_state_dict():
    features = build_features()
    depthwise = [m for m in features.modules() if isinstance(m, DepthwiseConv2d)]
    assert len(depthwise) == 17 and sum(m.stride == (2, 2) for m in depthwise) == 4
    assert all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    # Plain Conv2d's parameters and keys: the ImageNet checkpoint still loads strictly
    # (tests/unit/test_pretrained_backbone.py), saved models reload unchanged.
    assert all(list(dict(m.named_parameters())) == ["weight"] for m in depthwise)
