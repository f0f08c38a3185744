import torch
from torch import nn

from lvlmva_desktop.core.method.align import rrr_penalty


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3)).double()


def _penalty_value(model, x, mask):
    x = x.clone().requires_grad_(True)
    return rrr_penalty(model(x), x, mask)


def test_penalty_matches_its_definition():
    model = _model()
    x = torch.rand(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 0, :2] = True
    mask[1, 2, 3] = True
    pen = rrr_penalty(model(x), x, mask)
    # explicit: per image gradient of sum_k log softmax_k
    per = []
    for i in range(2):
        xi = x[i : i + 1].detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.log_softmax(model(xi), 1).sum(), xi)
        per.append(((mask[i] * g[0, 0]) ** 2).sum())
    assert torch.allclose(pen, torch.stack(per).mean())


def test_penalty_gradient_matches_finite_differences_float64():
    model = _model()
    x = torch.rand(3, 1, 3, 4, dtype=torch.float64)
    mask = torch.rand(3, 3, 4) > 0.5
    pen = _penalty_value(model, x, mask)
    grads = torch.autograd.grad(pen, list(model.parameters()))
    eps = 1e-6
    for p, g in zip(model.parameters(), grads):
        flat = p.data.view(-1)
        for j in range(0, flat.numel(), max(1, flat.numel() // 7)):
            old = flat[j].item()
            flat[j] = old + eps
            up = _penalty_value(model, x, mask).item()
            flat[j] = old - eps
            down = _penalty_value(model, x, mask).item()
            flat[j] = old
            fd = (up - down) / (2 * eps)
            assert abs(fd - g.view(-1)[j].item()) < 1e-6 * max(1.0, abs(fd)), (fd, g.view(-1)[j].item())


def test_empty_masks_give_zero_penalty_and_offset_selects_rows():
    model = _model()
    x = torch.rand(4, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    logits = model(x)
    assert rrr_penalty(logits[2:], x, torch.zeros(2, 3, 4, dtype=torch.bool), offset=2).item() == 0.0
    full = torch.ones(2, 3, 4, dtype=torch.bool)
    p_last = rrr_penalty(model(x)[2:], x, full, offset=2)
    x2 = x[2:].detach().clone().requires_grad_(True)
    assert torch.allclose(p_last, rrr_penalty(model(x2), x2, full))
