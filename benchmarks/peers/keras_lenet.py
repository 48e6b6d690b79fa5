"""Peer (c): Keras 3 on TensorFlow (CPU), the same LeNet-5, model.fit with validation data, Adam at 1e-3."""
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from common import args, channel_stats, load_split, report  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def __init__(self, images):
        super().__init__()
        self.images = images

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        report(epoch + 1, time.perf_counter() - self.t0, float(logs["loss"]), float(logs["val_accuracy"]),
               self.images)


def main():
    path, epochs, batch, _ = args()
    tx, ty, vx, vy = load_split(path)
    mean, std = channel_stats(tx)
    tx = ((tx.astype("float32") / 255) - mean) / std
    vx = ((vx.astype("float32") / 255) - mean) / std
    keras.utils.set_random_seed(0)
    L = keras.layers
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        L.Conv2D(6, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(16, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(120, activation="relu"), L.Dropout(0.5),
        L.Dense(84, activation="relu"), L.Dropout(0.5), L.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(tx, ty, batch_size=batch, epochs=epochs, validation_data=(vx, vy), verbose=0,
              callbacks=[EpochTimer(len(ty))])


if __name__ == "__main__":
    main()
