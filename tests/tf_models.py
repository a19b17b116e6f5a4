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
