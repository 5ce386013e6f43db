"""The networks of Adilova, Geiger & Fischer (ICLR 2023), as Keras functional models.

Every model has exactly one dropout layer, named ``"dropout"``; for information dropout its alpha
logits come from a parallel layer named ``"dropout_alpha_logits"`` that sees the same input as the
layer making f. The output is the class probabilities (softmax), for
``keras.losses.SparseCategoricalCrossentropy()`` with ``from_logits=False``. Information dropout always
gets a softplus f (log-normal prior; log f needs f > 0), also on ResNet18's otherwise linear bottleneck.
Kernels start from PyTorch's default initialisation, as in the paper's reference code.

CIFAR-10 nets start with augmentation (random shift of up to 4 pixels with zero fill, i.e. a random
32x32 crop of the image padded by 4, and a horizontal flip), which Keras runs only in training mode,
so inference-mode calls see the un-augmented inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import keras
import numpy as np

from mi_estimators.checks import check_float, check_int
from utils.layers import InformationDropout
from utils.nets import NETS

DROPOUT_NAME = "dropout"
ALPHA_LOGITS_NAME = "dropout_alpha_logits"
CROP_PADDING = 4


def _torch_init() -> keras.initializers.Initializer:
    # PyTorch's default kernel init, U(+-1/sqrt(fan_in)): the paper's learning rates (0.1 with momentum
    # 0.9 for MNIST) were tuned with it, and Keras' Glorot init stalls the softplus MLP at chance there.
    return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")


def _dense(units: int, **kwargs) -> keras.layers.Dense:
    return keras.layers.Dense(units, kernel_initializer=_torch_init(), **kwargs)


def _conv(channels: int, kernel: int, **kwargs) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(channels, kernel, padding="same", kernel_initializer=_torch_init(), **kwargs)


@dataclass(frozen=True)
class _Options:
    dropout: str
    p: float | None
    kl_weight: float
    beta: float
    alpha_max: float
    filters: float

    def width(self, channels: int) -> int:
        return max(1, int(round(channels * self.filters)))


def _dropout_block(
    x: keras.KerasTensor, make_f: Callable[[str], keras.layers.Layer], opts: _Options, *, f_activation: str | None
) -> keras.KerasTensor:
    """f = activation(make_f(...)(x)) followed by the dropout layer named "dropout"; information dropout
    uses softplus for f and adds the parallel alpha-logit layer make_f(...)(x) of the same shape."""
    f = make_f("dropout_input")(x)
    f_layer_activation = "softplus" if opts.dropout == "information" else f_activation
    if f_layer_activation is not None:
        f = keras.layers.Activation(f_layer_activation, name="dropout_input_activation")(f)
    if opts.dropout == "gaussian":
        return keras.layers.GaussianDropout(opts.p, name=DROPOUT_NAME)(f)
    if opts.dropout == "bernoulli":
        return keras.layers.Dropout(opts.p, name=DROPOUT_NAME)(f)
    logits = make_f(ALPHA_LOGITS_NAME)(x)
    layer = InformationDropout(
        opts.alpha_max, opts.beta, kl_weight=opts.kl_weight, prior="lognormal", name=DROPOUT_NAME
    )
    return layer([f, logits])


def _classifier(x: keras.KerasTensor, n_classes: int) -> keras.KerasTensor:
    return _dense(n_classes, activation="softmax", name="predictions")(x)


def _fc(x: keras.KerasTensor, n_classes: int, opts: _Options) -> keras.KerasTensor:
    x = keras.layers.Flatten()(x)
    x = _dense(512, activation="softplus")(x)
    x = _dense(128, activation="softplus")(x)
    x = _dropout_block(x, lambda name: _dense(32, name=name), opts, f_activation="softplus")
    return _classifier(x, n_classes)


def _lenet(x: keras.KerasTensor, n_classes: int, opts: _Options) -> keras.KerasTensor:
    # 'same' padding keeps the net valid on 8x8 digits (28 -> 14 -> 7, 8 -> 4 -> 2).
    x = _conv(6, 5, activation="softplus")(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = _conv(16, 5, activation="softplus")(x)
    x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = _dense(120, activation="softplus")(x)
    x = _dropout_block(x, lambda name: _dense(84, name=name), opts, f_activation="softplus")
    return _classifier(x, n_classes)


def _conv_bn_relu(x: keras.KerasTensor, channels: int, kernel: int = 3, strides: int = 1) -> keras.KerasTensor:
    x = _conv(channels, kernel, strides=strides, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.ReLU()(x)


def _basic_block(x: keras.KerasTensor, channels: int, strides: int) -> keras.KerasTensor:
    y = _conv_bn_relu(x, channels, strides=strides)
    y = _conv(channels, 3, use_bias=False)(y)
    y = keras.layers.BatchNormalization()(y)
    shortcut = x
    if strides != 1 or x.shape[-1] != channels:
        shortcut = _conv(channels, 1, strides=strides, use_bias=False)(x)
        shortcut = keras.layers.BatchNormalization()(shortcut)
    return keras.layers.ReLU()(keras.layers.Add()([y, shortcut]))


def _resnet18(x: keras.KerasTensor, n_classes: int, opts: _Options) -> keras.KerasTensor:
    x = _conv_bn_relu(x, opts.width(64))
    for stage, channels in enumerate((64, 128, 256, 512)):
        for block in range(2):
            x = _basic_block(x, opts.width(channels), strides=2 if stage > 0 and block == 0 else 1)
    x = keras.layers.GlobalAveragePooling2D()(x)
    # The paper's bottleneck is linear; information dropout works in log space and needs f > 0, so
    # _dropout_block gives it a softplus there.
    x = _dropout_block(x, lambda name: _dense(128, name=name), opts, f_activation=None)
    return _classifier(x, n_classes)


def _convnet(x: keras.KerasTensor, n_classes: int, opts: _Options) -> keras.KerasTensor:
    for channels in (32, 64, 128):
        x = _conv_bn_relu(x, opts.width(channels))
        x = keras.layers.MaxPooling2D(2, padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = _dropout_block(x, lambda name: _dense(128, name=name), opts, f_activation="softplus")
    return _classifier(x, n_classes)


def _allcnn(x: keras.KerasTensor, n_classes: int, opts: _Options) -> keras.KerasTensor:
    # All-CNN-C (Springenberg et al. 2015) with batch norm; as in Achille & Soatto's information-dropout
    # All-CNN, the noise acts on the output of the third (stride-2) conv.
    x = _conv_bn_relu(x, opts.width(96))
    x = _conv_bn_relu(x, opts.width(96))
    width = opts.width(96)
    x = _dropout_block(x, lambda name: _conv(width, 3, strides=2, name=name), opts, f_activation="softplus")
    x = _conv_bn_relu(x, opts.width(192))
    x = _conv_bn_relu(x, opts.width(192))
    x = _conv_bn_relu(x, opts.width(192), strides=2)
    x = _conv_bn_relu(x, opts.width(192))
    x = _conv_bn_relu(x, opts.width(192), kernel=1)
    x = _conv(n_classes, 1)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.layers.Activation("softmax", name="predictions")(x)


_BUILDERS = {"fc": _fc, "lenet": _lenet, "resnet18": _resnet18, "convnet": _convnet, "allcnn": _allcnn}


def _augment(x: keras.KerasTensor, height: int, width: int) -> keras.KerasTensor:
    # A zero-filled integer shift of up to 4 pixels per image equals a random crop of the 4-padded image
    # (keras.layers.RandomCrop would crop a whole batch at one offset and changes shape at inference).
    x = keras.layers.RandomTranslation(
        CROP_PADDING / height,
        CROP_PADDING / width,
        fill_mode="constant",
        fill_value=0.0,
        interpolation="nearest",
        name="random_crop",
    )(x)
    return keras.layers.RandomFlip("horizontal", name="random_flip")(x)


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape}")
    height, width, channels = (int(s) for s in shape)
    return height, width, channels


def _check_normalization(normalization: tuple, channels: int) -> tuple[np.ndarray, np.ndarray]:
    mean, std = (np.asarray(a, dtype=np.float64).reshape(-1) for a in normalization)
    if mean.shape != (channels,) or std.shape != (channels,):
        raise ValueError(f"normalization needs {channels} means and stds, got {mean.size} and {std.size}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
        raise ValueError("normalization means must be finite and stds finite and > 0")
    return mean, std


def _check_options(
    net: str, dropout: str, p: float | None, n_classes: int, n_train: int, beta: float, alpha_max: float, filters: float
) -> _Options:
    if net not in NETS:
        raise ValueError(f"unknown net {net!r}; choose one of: {', '.join(NETS)}")
    spec = NETS[net]
    if dropout not in spec.dropouts:
        raise ValueError(f"net {net!r} cannot take dropout {dropout!r}; it takes: {', '.join(spec.dropouts)}")
    rate: float | None = None  # information dropout learns its rates
    if dropout != "information":
        if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0.0 < float(p) < 1.0:
            raise ValueError(f"dropout rate p must be in (0, 1), got {p!r}")
        rate = float(p)
    check_int(n_classes, "n_classes", minimum=2)
    check_int(n_train, "n_train", minimum=1)
    beta = check_float(beta, "beta", minimum=0.0, inclusive=True)
    alpha_max = check_float(alpha_max, "alpha_max")
    filters = check_float(filters, "filters")
    if filters != 1.0 and spec.family != "cifar10":
        raise ValueError(f"net {net!r} has fixed widths; filters applies to the CIFAR-10 conv nets only")
    return _Options(dropout, rate, beta / n_train, beta, alpha_max, filters)


def build_model(
    net: str,
    *,
    dropout: str,
    p: float | None,
    input_shape: Sequence[int],
    n_classes: int,
    n_train: int,
    beta: float = 3.0,
    alpha_max: float = 0.7,
    filters: float = 1.0,
    normalization: tuple | None = None,
) -> keras.Model:
    """Build ``net`` (a key of :data:`NETS`) with one dropout layer named ``"dropout"``.

    ``p`` is the Gaussian/Bernoulli dropout rate (Gaussian noise std sqrt(p/(1-p))); information dropout
    ignores it and uses ``alpha_max`` and a KL weight beta / n_train. ``filters`` scales every conv width
    of the CIFAR-10 nets (e.g. 0.25). ``normalization=(mean, std)`` per channel standardises the inputs
    inside the model (after augmentation). Raises ValueError for an unknown net, a dropout kind the net
    cannot take or an out-of-range option.
    """
    opts = _check_options(net, dropout, p, n_classes, n_train, beta, alpha_max, filters)
    height, width, channels = _check_input_shape(input_shape)
    inputs = keras.Input((height, width, channels), name="inputs")
    x = inputs
    if NETS[net].family == "cifar10":
        x = _augment(x, height, width)
    if normalization is not None:
        mean, std = _check_normalization(normalization, channels)
        x = keras.layers.Normalization(mean=mean, variance=std**2, name="normalization")(x)
    outputs = _BUILDERS[net](x, int(n_classes), opts)
    return keras.Model(inputs, outputs, name=f"{net}_{dropout}")
