"""Model factories the export tests name with ``--arch tests-module:factory`` (no pickled code)."""
import torch

from edgeinf.zoo.nets import ResNetConfig, digits_resnet


class Fft(torch.nn.Module):
    """An op ONNX cannot express."""

    def forward(self, x):
        return x + torch.fft.fft2(x).abs()


def small_resnet():
    torch.manual_seed(0)
    m = digits_resnet(ResNetConfig(size=16, widths=(8, 16), depths=(2, 1), exits=(0,)))
    m.add_exit(0)
    return m


def small_resnet_fft():
    m = small_resnet()
    m.blocks[1] = torch.nn.Sequential(m.blocks[1], Fft())
    return m
