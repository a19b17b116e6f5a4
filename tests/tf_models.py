"""Small TensorFlow SavedModels built in fixtures (random weights, seconds to build)."""

from __future__ import annotations

from pathlib import Path


def small_cnn(path: Path, size: int = 32, classes: int = 10, channels: int = 3) -> Path:
    """image [batch, size, size, channels] float32 -> probs [batch, classes]."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inp = tf.keras.Input((size, size, channels), name="image")
    x = tf.keras.layers.Conv2D(8, 3, activation="relu")(inp)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    out = tf.keras.layers.Dense(classes, activation="softmax")(x)
    model = tf.keras.Model(inp, {"probs": out})
    model.export(str(path), verbose=False)
    return path


def multi_input(path: Path) -> Path:
    """image [batch, 16, 16, 3] float32 + extra [batch, 4] float32 -> scores [batch, 5]."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(1)
    image = tf.keras.Input((16, 16, 3), name="image")
    extra = tf.keras.Input((4,), name="extra")
    x = tf.keras.layers.GlobalAveragePooling2D()(tf.keras.layers.Conv2D(4, 3)(image))
    x = tf.keras.layers.Concatenate()([x, extra])
    out = tf.keras.layers.Dense(5)(x)
    model = tf.keras.Model({"image": image, "extra": extra}, {"scores": out})
    model.export(str(path), verbose=False)
    return path


def identity_image(
    path: Path,
    height: int = 12,
    width: int = 16,
    channels: int = 3,
    dtype: str = "float32",
    input_name: str = "pixels_in",
) -> Path:
    """``input_name`` [batch, height, width, channels] ``dtype`` -> pixels float32 (the input).

    Serving what the preprocessing made lets a test compare it with its own reference.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, height, width, channels], tf.as_dtype(dtype), name=input_name)

    class Identity(tf.Module):
        @tf.function(input_signature=[spec])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"pixels": tf.cast(x, tf.float32)}

    module = Identity()
    # the argument is called x in Python; the signature input takes the spec's name
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def nchw_identity(path: Path, height: int = 12, width: int = 16) -> Path:
    """A Keras model taking chw [batch, 3, height, width] that permutes to NHWC inside:
    -> pixels float32 [batch, height, width, 3]."""
    import tensorflow as tf

    inp = tf.keras.Input((3, height, width), name="chw")
    out = tf.keras.layers.Permute((2, 3, 1))(inp)
    model = tf.keras.Model(inp, {"pixels": out})
    model.export(str(path), verbose=False)
    return path


def two_signatures(path: Path) -> Path:
    """Two signatures over one input, photo [batch, 8, 8, 3] float32:
    serving_default -> class_probs [batch, 4]; embed -> embedding [batch, 6]."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, 8, 8, 3], tf.float32, name="photo")

    class TwoHeads(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = tf.random.Generator.from_seed(2)
            self.w_embed = tf.Variable(rng.normal([3, 6]))
            self.w_class = tf.Variable(rng.normal([6, 4]))

        def _embed(self, photo: tf.Tensor) -> tf.Tensor:
            return tf.matmul(tf.reduce_mean(photo, axis=[1, 2]) / 255.0, self.w_embed)

        @tf.function(input_signature=[spec])
        def classify(self, photo: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"class_probs": tf.nn.softmax(tf.matmul(self._embed(photo), self.w_class))}

        @tf.function(input_signature=[spec])
        def embed(self, photo: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"embedding": self._embed(photo)}

    module = TwoHeads()
    tf.saved_model.save(
        module,
        str(path),
        signatures={"serving_default": module.classify, "embed": module.embed},
    )
    return path


def int_inputs(path: Path) -> Path:
    """ids int32 [batch, 3] + weights float32 [batch, 3] -> score float32 [batch]
    (sum of ids * weights): a non-image model with an integer input."""
    import tensorflow as tf

    class Weighted(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 3], tf.int32, name="ids"),
                tf.TensorSpec([None, 3], tf.float32, name="weights"),
            ]
        )
        def serve(self, ids: tf.Tensor, weights: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"score": tf.reduce_sum(tf.cast(ids, tf.float32) * weights, axis=1)}

    module = Weighted()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path
