"""Block-wise reconstruction: the blocks found, each block's error lowered, masks and channels kept."""

import torch
import torchvision

from edgefree.config import ChannelPruning, MagnitudePruning, ReconstructConfig
from edgefree.models import load_teacher
from edgefree.models.cifar_resnet import CifarResNet
from edgefree.recover import SyntheticSet, prune, reconstruct
from edgefree.recover.blockwise import blocks


def test_blocks_are_residual_blocks_in_forward_order():
    resnet = CifarResNet(blocks_per_stage=2).eval()
    assert blocks(resnet, torch.randn(2, 3, 16, 16)) == [f"layer{s}.{b}" for s in (1, 2, 3) for b in (0, 1)]
    mobilenet = torchvision.models.mobilenet_v3_small(num_classes=10).eval()
    found = blocks(mobilenet, torch.randn(2, 3, 32, 32))
    # inverted residuals only: the stem, the last 1x1 conv and the classifier's linears are single layers
    assert found == [f"features.{i}" for i in range(1, 12)]


def _setup(stages):
    torch.manual_seed(0)
    teacher = load_teacher("resnet20-cifar")
    images = torch.randn(64, 3, 32, 32)
    pruned = prune(teacher, stages)
    return teacher, pruned, SyntheticSet(images, torch.arange(64) % 10)


def test_blocks_get_closer_to_the_teacher_and_keep_masks_and_channels():
    teacher, pruned, dreams = _setup([ChannelPruning(ratio=0.5), MagnitudePruning(0.5)])
    layer_wise = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=64, batch_size=32), progress=False)
    both = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=64, batch_size=32, block_steps=40),
                       progress=False)
    report = both.stats["blocks"]
    assert report["count"] == 9  # ResNet-20: three stages of three residual blocks
    before, after = report["error_before"], report["error_after"]
    assert all(after[b] <= before[b] for b in before) and sum(after.values()) < 0.97 * sum(before.values())
    for name, mask in pruned.masks.items():  # magnitude zeros stay zero
        assert (both.model.get_parameter(name)[~mask] == 0).all()
    assert [p.shape for p in both.model.parameters()] == [p.shape for p in pruned.model.parameters()]
    changed = [n for (n, a), b in zip(both.model.named_parameters(), layer_wise.model.parameters()) if not torch.equal(a, b)]
    assert changed and all(n.startswith("layer") and ".bn" not in n for n in changed)  # convs of blocks only


def test_a_block_whose_error_would_rise_keeps_its_refit_weights():
    teacher, pruned, dreams = _setup([ChannelPruning(ratio=0.5)])
    layer_wise = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=64, batch_size=32), progress=False)
    wild = reconstruct(teacher, pruned, dreams, ReconstructConfig(images=64, batch_size=32, block_steps=5, block_lr=50.0),
                       progress=False)
    report = wild.stats["blocks"]
    assert report["error_after"] == report["error_before"]
    for a, b in zip(wild.model.parameters(), layer_wise.model.parameters()):
        assert torch.equal(a, b)
