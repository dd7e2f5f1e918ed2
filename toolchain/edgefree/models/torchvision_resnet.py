"""torchvision ResNet-18/34/50 with a CIFAR stem: 3x3 stride-1 first conv, no max-pool."""

from torch import nn
from torchvision import models as tvm

from edgefree.models.cifar_resnet import CIFAR_SPEC
from edgefree.models.registry import register_model


def _cifar_stem(model: nn.Module) -> nn.Module:
    model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


def _register(depth: int, builder):
    @register_model(f"resnet{depth}-cifar", CIFAR_SPEC, f"torchvision ResNet-{depth} with a CIFAR stem (3x3 conv, no max-pool)")
    def factory(num_classes: int = 10):
        return _cifar_stem(builder(weights=None, num_classes=num_classes))

    return factory


resnet18 = _register(18, tvm.resnet18)
resnet34 = _register(34, tvm.resnet34)
resnet50 = _register(50, tvm.resnet50)
