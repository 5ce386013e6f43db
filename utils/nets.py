"""What each network of Adilova, Geiger & Fischer (ICLR 2023) is for, without importing Keras.

The training scripts check their flags against :data:`NETS` before Keras (and TensorFlow or JAX) is
imported, so ``--help`` and flag errors answer at once; ``utils.models`` builds the nets themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

from mi_estimators.checks import DROPOUT_KINDS
from utils.data import DATASETS


@dataclass(frozen=True)
class NetSpec:
    """What a net is for: its dataset family, the datasets it runs on and the dropout kinds it takes."""

    family: str
    datasets: tuple[str, ...]
    dropouts: tuple[str, ...]
    default_dropout: str
    description: str


_MNIST = ("mnist", "fashion_mnist", "digits")
_CIFAR = ("cifar10",)

NETS: dict[str, NetSpec] = {
    "fc": NetSpec(
        "mnist", _MNIST, DROPOUT_KINDS, "gaussian", "784-512-128-32-10 softplus MLP, dropout on the 32 units"
    ),
    "lenet": NetSpec(
        "mnist",
        _MNIST,
        DROPOUT_KINDS,
        "gaussian",
        "LeNet-5 (conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84, fc 10), softplus, dropout on the 84 units",
    ),
    "resnet18": NetSpec(
        "cifar10",
        _CIFAR,
        DROPOUT_KINDS,
        "gaussian",
        "CIFAR ResNet18 (3x3 stem, basic blocks [2,2,2,2]) + 128-unit bottleneck, dropout before the classifier",
    ),
    "convnet": NetSpec(
        "cifar10",
        _CIFAR,
        DROPOUT_KINDS,
        "gaussian",
        "small 3-conv net for quick CPU runs, dropout on a 128-unit softplus bottleneck",
    ),
    "allcnn": NetSpec(
        "cifar10", _CIFAR, DROPOUT_KINDS, "information", "All-CNN-C-style net, dropout after the third (stride-2) conv"
    ),
}


def family_choices(family: str) -> tuple[list[str], list[str]]:
    """Nets of a dataset family (``"mnist"`` or ``"cifar10"``) and the datasets they run on (in the
    order of ``utils.data.DATASETS``); ValueError for an unknown family."""
    nets = [name for name, spec in NETS.items() if spec.family == family]
    if not nets:
        families = sorted({spec.family for spec in NETS.values()})
        raise ValueError(f"unknown net family {family!r}; choose one of: {', '.join(families)}")
    datasets = sorted({d for name in nets for d in NETS[name].datasets}, key=list(DATASETS).index)
    return nets, datasets
