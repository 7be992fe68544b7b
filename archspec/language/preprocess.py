"""The input preprocessing a spec names (`input.preprocess`): keras.applications'
`preprocess_input` modes, as data and as one pure function of a numpy array.

keras.applications leaves the preprocessing of most of its networks outside the model,
in `<family>.preprocess_input(x)` (keras/src/applications/imagenet_utils.py), with one of
three modes; the pretrained weights of those networks expect it:

- ``caffe`` (ResNet, VGG): RGB -> BGR, then the ImageNet mean pixel (BGR
  103.939, 116.779, 123.68) subtracted; no scaling;
- ``torch`` (DenseNet): x / 255, minus the ImageNet mean (0.485, 0.456, 0.406), divided by
  the ImageNet std (0.229, 0.224, 0.225), per RGB channel;
- ``tf`` (MobileNet, MobileNetV2, Xception, InceptionV3, InceptionResNetV2): x / 127.5 - 1;
- ``none``: the identity (EfficientNet, ConvNeXt, MobileNetV3 do it inside the model: the
  spec's `input.preprocessing` layers; and a network trained from scratch on raw pixels).

The spec's lowered Graph, and so the Keras model, stays the published network: the mode
is applied to the data by training, `evaluate`, `predict` and the export check, and is
put into an exported graph only on request (`export(..., bake_preprocessing=True)`).

Each mode is a short list of steps (`steps`) that every implementation follows in the
same order, with the same float32 constants, as keras does: this module's numpy
`preprocess`, training's tf.data map and the exporter's baked layers.
No framework here: numpy only, imported when an array is preprocessed.
"""

from __future__ import annotations

from typing import Literal

#: the modes, as `input.preprocess` takes them
Mode = Literal["none", "caffe", "torch", "tf"]
MODES: tuple[str, ...] = ("none", "caffe", "torch", "tf")

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # subtracted after RGB -> BGR
TORCH_MEAN = (0.485, 0.456, 0.406)  # after x / 255, per RGB channel
TORCH_STD = (0.229, 0.224, 0.225)

#: the keras.applications families that use each mode (what the docs and `inspect` say)
FAMILIES = {
    "caffe": "ResNet50/101/152, VGG16/19",
    "torch": "DenseNet121/169/201",
    "tf": "MobileNet, MobileNetV2, Xception, InceptionV3, InceptionResNetV2",
    "none": "EfficientNet, ConvNeXt, MobileNetV3 (preprocessing inside the model), or none at all",
}

_DESCRIPTION = {
    "none": "none: images are fed as stored (any input.preprocessing layers are inside the model)",
    "caffe": "caffe (keras.applications ResNet/VGG): RGB -> BGR, minus the ImageNet mean pixel "
             "(B 103.939, G 116.779, R 123.68); no scaling",
    "torch": "torch (keras.applications DenseNet): x / 255, minus mean (0.485, 0.456, 0.406), divided by std "
             "(0.229, 0.224, 0.225), per RGB channel",
    "tf": "tf (keras.applications MobileNet/MobileNetV2/Xception/Inception): x / 127.5 - 1",
}


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown preprocessing mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def describe(mode: str) -> str:
    """One line saying what `mode` does to an image of RGB pixels 0..255."""
    return _DESCRIPTION[check_mode(mode)]


def steps(mode: str) -> list[tuple]:
    """The mode as an ordered list of steps on a channels-last float32 image:
    ``("flip",)`` (reverse the channels: RGB -> BGR), ``("div", d)`` (x / d),
    ``("sub", values)`` (x - value per channel, or one value), ``("divc", values)``
    (x / value per channel). keras' own order and constants."""
    check_mode(mode)
    if mode == "caffe":
        return [("flip",), ("sub", CAFFE_MEAN_BGR)]
    if mode == "torch":
        return [("div", 255.0), ("sub", TORCH_MEAN), ("divc", TORCH_STD)]
    if mode == "tf":
        return [("div", 127.5), ("sub", (1.0,))]
    return []


def channels_needed(mode: str) -> int | None:
    """The number of channels the mode needs (3 for its per-channel RGB constants), or None
    when any number will do."""
    return 3 if check_mode(mode) in ("caffe", "torch") else None


def check_channels(mode: str, channels: int) -> str | None:
    """Why `mode` cannot preprocess images of `channels` channels (None when it can)."""
    need = channels_needed(mode)
    if need is not None and channels != need:
        return (f"input.preprocess: {mode} needs RGB images ({need} channels; its means are per RGB channel) but "
                f"the input has {channels} channel{'s' if channels != 1 else ''}; set input.preprocess: none (or tf) "
                f"for this input")
    return None


def preprocess(x, mode: str):
    """`x` (channels-last images, (..., C), any real dtype, pixels 0..255 as stored) preprocessed
    by `mode`, as float32; `x` itself is never changed. Equal to
    ``keras.applications.<family>.preprocess_input`` of the family that uses the mode."""
    import numpy as np

    a = np.asarray(x)
    a = a.astype("float32") if a.dtype != np.float32 else a.copy()
    problem = check_channels(mode, a.shape[-1]) if a.ndim else None
    if problem:
        raise ValueError(problem)
    for step in steps(mode):
        if step[0] == "flip":
            a = a[..., ::-1]
        elif step[0] == "div":
            a = a / np.float32(step[1])
        elif step[0] == "sub":
            a = a - np.asarray(step[1], dtype="float32")
        else:  # "divc"
            a = a / np.asarray(step[1], dtype="float32")
    return np.ascontiguousarray(a, dtype="float32")
