"""Train an MNIST-family network with a dropout layer and record its information plane.

Defaults are those of Adilova, Geiger & Fischer (ICLR 2023): the 784-512-128-32-10
softplus net with Gaussian dropout (p = 0.2) on the 32 units, SGD lr 0.1 with momentum 0.9, weight
decay 1e-3 and cosine decay over 200 epochs, batch 256, representations every 2 epochs; at the end
the information plane is estimated and drawn under <run>/figures (``--no-analyze`` to skip).
Quick offline run, the README's first command (75% test accuracy on TensorFlow, 84% on JAX; about 14 s
of training and 30 s in all on two CPU cores; any Keras 3 backend, e.g. KERAS_BACKEND=jax):
  python mi_mnist_dropout.py --dataset digits --epochs 20 --batch-size 16 --lr 0.01
"""

import sys

from utils.train_command import main

DEFAULTS = {
    "dataset": "mnist",
    "net": "fc",
    "lr": 0.1,
    "batch_size": 256,
    "epochs": 200,
    "p": 0.2,
    "weight_decay": 1e-3,
    "save_every": 2,
    "analyze": True,
}


if __name__ == "__main__":
    sys.exit(main(defaults=DEFAULTS, family="mnist", description=__doc__))
