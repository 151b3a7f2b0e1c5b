import pytest
import torch
import torchvision

from netcompress.core import ConfigError
from netcompress.networks.cifar_resnet import he_resnet, resnet18, resnet34
from netcompress.networks.flops import count_flops, count_params
from netcompress.networks.lenet import LeNet5, lenet5_half
from netcompress.networks.torchvision_models import TorchvisionClassifier


@pytest.mark.parametrize("make, in_ch, size, feature_dim", [
    (lambda: LeNet5(10, 1), 1, 32, 120),
    (lambda: lenet5_half(10, 1), 1, 32, 60),
    (lambda: resnet18(100), 3, 32, 512),
    (lambda: he_resnet(20, 100), 3, 32, 64),
    (lambda: TorchvisionClassifier("mobilenet_v2", 7), 3, 64, 1280),
])
def test_uniform_interface_logits_and_features(make, in_ch, size, feature_dim):
    net = make().eval()
    x = torch.randn(2, in_ch, size, size)
    logits, features = net(x, return_features=True)
    assert features.shape == (2, feature_dim) == (2, net.feature_dim)
    assert torch.allclose(net(x), logits)
    assert logits.shape[0] == 2


def test_lenet5_flops_by_hand():
    # conv1 6*28*28*(1*5*5) + conv2 16*10*10*(6*5*5) + conv3 120*(16*5*5) + fc 120*84 + fc 84*10
    assert count_flops(LeNet5(10, 1), (1, 32, 32)) == 117_600 + 240_000 + 48_000 + 10_080 + 840
    assert count_params(LeNet5(10, 1)) == 61_706


def test_torchvision_flops_match_published_counts():
    # ResNet-18 1.82 GMACs and MobileNetV2 300M (the papers' "FLOPs") at 224x224
    assert count_flops(TorchvisionClassifier("resnet18"), (3, 224, 224)) == pytest.approx(1.82e9, rel=0.01)
    assert count_flops(TorchvisionClassifier("mobilenet_v2"), (3, 224, 224)) == pytest.approx(300e6, rel=0.02)


def test_cifar_resnet_depths_and_params():
    assert count_params(he_resnet(20, 100)) == pytest.approx(0.28e6, rel=0.05)   # He et al.: 0.27M (10 classes)
    assert count_params(resnet34(10)) == pytest.approx(21.3e6, rel=0.01)
    with pytest.raises(ValueError, match="6n\\+2"):
        he_resnet(21)


def test_torchvision_local_weights_file(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = TorchvisionClassifier("resnet18", weights_path=str(path))
    assert torch.equal(net.head.weight, reference.fc.weight)
    with pytest.raises(ConfigError, match="model.weights_path"):
        TorchvisionClassifier("resnet18", weights_path=str(tmp_path / "missing.pth"))


def test_torchvision_weights_unreachable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache; the machine has no internet
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("network unreachable")))
    with pytest.raises(ConfigError, match="model.weights_path"):
        TorchvisionClassifier("resnet18", weights="IMAGENET1K_V1")
