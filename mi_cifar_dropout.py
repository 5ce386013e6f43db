"""Train a CIFAR-10 network with a dropout layer and record its information plane.

Defaults are those of Adilova, Geiger & Fischer (ICLR 2023): CIFAR ResNet18 with a
128-unit bottleneck and Gaussian dropout (p = 0.4) before the classifier, SGD lr 0.05 with momentum
0.9, weight decay 5e-4 and cosine decay over 200 epochs, batch 64, random crop + flip, per-channel
normalisation, representations every 10 epochs. ``--net allcnn`` defaults to information dropout.
``--analyze`` estimates and draws the information plane at the end (off by default: hours on CIFAR-10).
"""

import sys

from utils.train_command import main

DEFAULTS = {
    "dataset": "cifar10",
    "net": "resnet18",
    "lr": 0.05,
    "batch_size": 64,
    "epochs": 200,
    "p": 0.4,
    "weight_decay": 5e-4,
    "save_every": 10,
    "analyze": False,
}


if __name__ == "__main__":
    sys.exit(main(defaults=DEFAULTS, family="cifar10", description=__doc__))
