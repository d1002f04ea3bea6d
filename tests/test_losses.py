"""The SLN objective, label correction and the EMA, against direct computations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sln_cli.methods.sln import add_label_noise, correct_targets, soft_cross_entropy
from sln_cli.training.ema import WeightEMA


def test_soft_cross_entropy_equals_the_direct_sum():
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 4), torch.randn(5, 4)  # noised targets need not be distributions
    direct = -sum(
        targets[i, k] * torch.log(torch.exp(logits[i, k]) / torch.exp(logits[i]).sum())
        for i in range(5) for k in range(4)
    ) / 5
    assert torch.allclose(soft_cross_entropy(logits, targets), direct, atol=1e-5)


def test_sigma_zero_is_plain_cross_entropy():
    torch.manual_seed(1)
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    targets = add_label_noise(F.one_hot(labels, 10).float(), sigma=0.0)
    assert torch.allclose(soft_cross_entropy(logits, targets), F.cross_entropy(logits, labels))


def test_label_noise_is_fresh_gaussian_with_std_sigma():
    targets = torch.zeros(20_000, 10)
    generator = torch.Generator().manual_seed(0)
    first, second = add_label_noise(targets, 0.5, generator), add_label_noise(targets, 0.5, generator)
    assert not torch.equal(first, second)
    # 200,000 draws: the sample std is within 1% of sigma and the mean within 0.005 (> 4 standard errors)
    assert abs(first.std().item() - 0.5) < 0.005 and abs(first.mean().item()) < 0.005
    assert torch.equal(add_label_noise(targets, 0.0), targets)


def test_label_correction_follows_the_formula():
    losses = torch.tensor([0.0, 1.0, 3.0])  # w = [0, 1/3, 1]
    noisy = torch.tensor([0, 1, 2])
    probs = torch.tensor([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    argmax = correct_targets(losses, noisy, probs, mix_with="argmax")
    expected = torch.tensor([[0.0, 1.0, 0.0], [2 / 3, 1 / 3, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(argmax, expected)
    soft = correct_targets(losses, noisy, probs, mix_with="softmax")
    expected_soft = torch.stack([probs[0], probs[1] * 2 / 3 + torch.tensor([0, 1 / 3, 0]), torch.tensor([0, 0, 1.0])])
    assert torch.allclose(soft, expected_soft)


def test_label_correction_with_equal_losses_keeps_the_prediction():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    out = correct_targets(torch.ones(2), torch.tensor([1, 0]), probs)
    assert torch.allclose(out, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.linear(x))


@pytest.mark.parametrize("decay", [0.9, 0.999])
def test_ema_matches_a_hand_computed_average_including_buffers(decay):
    torch.manual_seed(0)
    net = _Net()
    ema = WeightEMA(net, decay=decay)
    expected = {k: v.clone().double() for k, v in net.state_dict().items()}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        loss = net(torch.randn(16, 3)).pow(2).mean()  # train mode: BN running stats move too
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        ema.update()
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                expected[k] = decay * expected[k] + (1 - decay) * v.double()
            else:
                expected[k] = v.clone()
    state = ema.state_dict()
    assert "bn.running_mean" in state and "bn.running_var" in state
    for k, v in state.items():
        assert torch.allclose(v.double(), expected[k].double(), atol=1e-6), k
    assert state["bn.num_batches_tracked"] == 5


def test_ema_starts_equal_and_is_detached():
    net = _Net()
    ema = WeightEMA(net)
    for (k, a), b in zip(net.state_dict().items(), ema.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in ema.module.parameters())
