"""The small model that ships with the package: the built-in default."""

from torch import nn

from edgefree.models.registry import InputSpec, register_model

DIGITS_SPEC = InputSpec(shape=(1, 8, 8), mean=(0.5,), std=(0.5,), class_names=tuple(str(d) for d in range(10)))


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@register_model("digits-cnn", DIGITS_SPEC, "built-in default: 4-conv BatchNorm CNN for 8x8 digits (scikit-learn)")
def digits_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        _conv_bn(1, 32, 1),
        _conv_bn(32, 32, 1),
        _conv_bn(32, 64, 2),
        _conv_bn(64, 64, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )
