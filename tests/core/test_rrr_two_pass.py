"""The RRR step runs the alignment images in a pass of their own (train.batch_loss) so that the penalty's
double back-propagation goes through a quarter of the batch; its loss, penalty, parameter gradients and
batch-norm running statistics must equal those of the formula it replaced: one pass over the whole mixed
batch, normalised with the ordinary images' statistics, and the input gradient taken over every row."""

import copy

import pytest
import torch
from torch import nn

from lvlmva_desktop.core.method.align import rrr_penalty
from lvlmva_desktop.core.method.models import ModelSpec, build_model
from lvlmva_desktop.core.method.reliance import counterfactual_batch
from lvlmva_desktop.core.method.train import _reference_batchnorm, batch_loss


class _old_reference_batchnorm:
    """train._reference_batchnorm as it stood before the two-pass step, verbatim."""

    def __init__(self, model, n_ref):
        self.bns = [
            m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        ]
        self.n_ref = n_ref

    def __enter__(self):
        n_ref = self.n_ref

        def make(m):
            def forward(x):
                dims = [0] + list(range(2, x.ndim))
                ref = x[:n_ref]
                mean = ref.mean(dims)
                var = ref.var(dims, unbiased=False)
                with torch.no_grad():
                    mom = 0.1 if m.momentum is None else m.momentum
                    n = ref.numel() / ref.shape[1]
                    m.running_mean.mul_(1 - mom).add_(mom * mean.detach())
                    m.running_var.mul_(1 - mom).add_(mom * var.detach() * n / max(n - 1, 1))
                shape = [1, x.shape[1]] + [1] * (x.ndim - 2)
                out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + m.eps)
                if m.affine:
                    out = out * m.weight.view(shape) + m.bias.view(shape)
                return out

            return forward

        for m in self.bns:
            m.forward = make(m)

    def __exit__(self, *exc):
        for m in self.bns:
            del m.forward


def _one_pass(model, xb, yb, mb, n_plain, lambda_, penalty, normalise):
    """The formula as it stood before the two-pass step (train.fit up to December 2026), verbatim."""
    use_gradient = lambda_ > 0 and penalty in ("gradient", "both")
    use_counterfactual = lambda_ > 0 and penalty in ("counterfactual", "both")
    pen = torch.zeros((), device=xb.device)
    extra_x, extra_y = xb[:0], yb[:0]
    if use_counterfactual:
        d = torch.arange(len(mb), device=xb.device) % max(n_plain, 1)
        extra_x, extra_y = counterfactual_batch(xb[n_plain:], yb[n_plain:], mb, xb[d], yb[d])
    xb.requires_grad_(use_gradient)
    with _old_reference_batchnorm(model, n_plain):
        logits_all = model(torch.cat([xb, extra_x.detach()]))
    logits = logits_all[: len(xb)]
    ce = nn.functional.cross_entropy(logits, yb)
    if use_gradient:
        pen = pen + rrr_penalty(logits[n_plain:], xb, mb, n_plain, normalise=normalise)
    if len(extra_y):
        pen = pen + nn.functional.cross_entropy(logits_all[len(xb) :], extra_y)
    return ce + lambda_ * pen, ce, pen, logits


def _state(model, fn, xb, yb, mb, n_plain, **kw):
    model = copy.deepcopy(model).train()
    loss, ce, pen, logits = fn(model, xb.clone(), yb, mb, n_plain, **kw)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    running = [b.clone() for name, b in model.named_buffers() if "running" in name]
    return loss.detach(), pen.detach(), logits.detach(), grads, running


@pytest.mark.parametrize(
    ("arch", "channels", "size"), [("small_cnn", 3, 32), ("resnet18", 3, 32), ("mlp", 1, 12)]
)
@pytest.mark.parametrize(("penalty", "normalise"), [("gradient", False), ("gradient", True), ("both", False)])
def test_two_pass_step_equals_the_one_pass_formula(arch, channels, size, penalty, normalise):
    torch.manual_seed(0)
    model = build_model(ModelSpec(arch, 3, channels, (size, size))).double()
    n_plain, n_align = 12, 4
    xb = torch.rand(n_plain + n_align, channels, size, size, dtype=torch.float64)
    yb = torch.randint(0, 3, (n_plain + n_align,))
    mb = torch.rand(n_align, size, size) > 0.7
    mb[1] = False  # an alignment image without a mask
    kw = dict(lambda_=3.0, penalty=penalty, normalise=normalise)
    old = _state(
        model,
        lambda m, x, y, mm, n, **k: _one_pass(m, x, y, mm, n, k["lambda_"], k["penalty"], k["normalise"]),
        xb,
        yb,
        mb,
        n_plain,
        **kw,
    )
    new = _state(model, batch_loss, xb, yb, mb, n_plain, **kw)
    assert old[1].item() > 0  # a penalty that is there to compare
    for a, b in zip(old[:3], new[:3]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
    assert len(old[3]) == len(new[3]) and len(old[3]) > 0
    for a, b in zip(old[3], new[3]):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10)
    for a, b in zip(old[4], new[4]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_replayed_statistics_are_used_in_call_order_and_update_nothing():
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(2).double().train()
    model = nn.Sequential(bn)
    first = torch.randn(8, 2, dtype=torch.float64) * 3 + 5
    other = torch.randn(4, 2, dtype=torch.float64)
    with _reference_batchnorm(model, 8) as ref:
        model(first)
        after_first = bn.running_mean.clone()
        ref.reuse()
        out = model(other)
    assert torch.equal(bn.running_mean, after_first)  # the replayed pass updated no running statistic
    expected = (other - first.mean(0)) / torch.sqrt(first.var(0, unbiased=False) + bn.eps)
    assert torch.allclose(out, expected)
    assert "forward" not in vars(bn)  # the layer's own forward is back


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_two_pass_step_equals_the_one_pass_formula_on_cuda():
    """cuDNN's double back-propagation and the fused batch-norm kernel on the device: the same numbers."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = build_model(ModelSpec("resnet18", 2, 3, (64, 64))).double().to(dev)
    xb = torch.rand(16, 3, 64, 64, dtype=torch.float64, device=dev)
    yb = torch.randint(0, 2, (16,), device=dev)
    mb = torch.rand(4, 64, 64, device=dev) > 0.7

    def one_pass(m, x, y, mm, n, **k):
        return _one_pass(m, x, y, mm, n, k["lambda_"], k["penalty"], k["normalise"])

    kw = dict(lambda_=2.0, penalty="gradient", normalise=False)
    old = _state(model, one_pass, xb, yb, mb, 12, **kw)
    new = _state(model, batch_loss, xb, yb, mb, 12, **kw)
    assert torch.allclose(old[1], new[1], rtol=1e-8)
    for a, b in zip(old[3], new[3]):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)
