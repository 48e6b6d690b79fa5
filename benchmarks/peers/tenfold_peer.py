"""Peer (a): tenfold's own training path (build -> fit) with its defaults, on the exported split."""
from common import args, load_split, report
from tenfold.config import TrainConfig
from tenfold.data import ImageSet, Splits
from tenfold.training import Callback
from tenfold.training.run import build, loaders, thread_callbacks
from tenfold.training import fit

CLASSES = [str(i) for i in range(10)]


class Report(Callback):
    def __init__(self, images):
        self.images = images

    def on_epoch_end(self, epoch, logs):
        report(epoch, logs["seconds"], logs["loss"], logs["val_accuracy"], self.images)


def main():
    path, epochs, batch, device = args()
    tx, ty, vx, vy = load_split(path)
    data = Splits(ImageSet(tx, ty, CLASSES), ImageSet(vx, vy, CLASSES), None, source=path)
    config = TrainConfig(epochs=epochs, device=device, **({"batch_size": batch} if batch else {}))
    run = build(config, quiet=True, data=data)
    train_loader, val_loader = loaders(run, config.batch_size)
    fit(run.model, run.optimizer, train_loader, val_loader, epochs, [*thread_callbacks(run), Report(len(ty))])


if __name__ == "__main__":
    main()
