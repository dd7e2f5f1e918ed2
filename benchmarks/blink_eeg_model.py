"""The EEG teacher's network as its owner would hand it over: a file of their own, with no edgefree in it.

``edgefree build --arch benchmarks/blink_eeg_model.py:build`` imports it as it would any user's
``file.py:factory``; its layers are those of the zoo's ``signal-cnn1d``, so the state_dict that
``train_signal_teacher.py`` writes loads into it (``signal_recovery.py``, row ``mag75-cli``).
"""

from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm1d(cout),
                         nn.ReLU(inplace=True))


def build(num_classes: int = 2) -> nn.Module:
    """Five Conv1d + BatchNorm1d + ReLU blocks over 4 EEG channels, global average pooling, a linear layer."""
    return nn.Sequential(_conv_bn(4, 16, 7, 2), _conv_bn(16, 32, 5, 2), _conv_bn(32, 32, 5, 1),
                         _conv_bn(32, 64, 5, 2), _conv_bn(64, 64, 3, 2), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                         nn.Linear(64, num_classes))
