"""archspec's own Keras layers (local response normalization, LayerScale, CustomScaleLayer),
registered as serializable so that `.keras` files reopen after ``import archspec``; `CUSTOM_OBJECTS`
names them as the op table does (`optable.keras_class`). Here, beside the table and not
in `keras/`, because both the table and the builder (`keras.build`) need them: neither
module nor package imports the other back (no cycle). Imported only where Keras is: by
the builder and inside `keras_class`."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="archspec")
class LocalResponseNormalization(layers.Layer):
    """Across-channel LRN (AlexNet, GoogLeNet), written with `keras.ops`:
    ``x / (k + alpha * sum_{depth channels around c} x**2) ** beta`` (as
    ``tf.nn.local_response_normalization`` with depth_radius = depth // 2)."""

    def __init__(self, depth: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth, self.k, self.alpha, self.beta = int(depth), float(k), float(alpha), float(beta)

    def call(self, x):
        r = self.depth // 2
        sq = ops.square(x)
        padded = ops.pad(sq, [[0, 0], [0, 0], [0, 0], [r, r]])
        c = ops.shape(x)[-1]
        total = padded[..., 0:c]
        for i in range(1, self.depth):
            total = total + padded[..., i:i + c]
        return x / ops.power(self.k + self.alpha * total, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth": self.depth, "k": self.k, "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="archspec")
class LayerScale(layers.Layer):
    """A learned per-channel scale ``x * gamma`` (ConvNeXt), gamma initialised to `init`;
    its one weight is named `gamma`, as in keras.applications' ConvNeXt."""

    def __init__(self, init: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init), trainable=True)

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init": self.init}


@keras.saving.register_keras_serializable(package="archspec")
class CustomScaleLayer(layers.Layer):
    """Inception-ResNet's scaled residual: ``[x, branch] -> x + branch * scale``, as
    keras.applications' InceptionResNetV2 writes it (its layer of this class name, so that an
    unnamed one gets keras' name, ``custom_scale_layer_N``). No weights."""

    def __init__(self, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def call(self, inputs):
        return inputs[0] + inputs[1] * self.scale

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


CUSTOM_OBJECTS = {"archspec>LocalResponseNormalization": LocalResponseNormalization,
                  "archspec>LayerScale": LayerScale, "archspec>CustomScaleLayer": CustomScaleLayer}
