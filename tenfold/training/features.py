"""`--freeze`: a pretrained backbone's features computed once, then only the head trained on them (a linear probe,
as in the PyTorch transfer-learning tutorial's "ConvNet as fixed feature extractor"). The whole net is still what
the checkpoint keeps, so evaluate, predict and export see an ordinary run."""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.training.fit import autocast


class FeatureHead(nn.Module):
    """The head of a PretrainedClassifier applied to precomputed features: (N, F) -> logits (N, classes), or
    (N, V, F) views of each image -> the mean of their logits (test-time augmentation, exact for a linear head)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.dropout, self.head = model.dropout, model.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.dropout(x))
        return logits.mean(1) if x.dim() == 3 else logits


class FeatureLoader:
    """Batches of (features, labels) from (N, V, F) features: in training, one random view of each image per
    epoch (the image or its mirror: flip augmentation); in evaluation, all V views."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device,
                 shuffle: bool = False, generator: torch.Generator | None = None):
        self.features, self.labels = features, labels
        self.batch_size, self.device, self.shuffle = batch_size, device, shuffle
        self.generator = generator or torch.Generator()
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self):
        n, views = len(self.labels), self.features.shape[1]
        self.epoch += 1
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        pick = torch.randint(0, views, (n,), generator=self.generator) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size].to(self.device)
            x = self.features[idx] if pick is None else self.features[idx, pick[start:start + self.batch_size]]
            yield x, self.labels[idx]


@torch.inference_mode()
def extract(model: nn.Module, loader, views: int, precision: str, desc: str, quiet: bool) -> torch.Tensor:
    """(N, views, F) float32 backbone features of every image of `loader` (centre crops), in order; view 1 is the
    mirror image. A progress bar on a terminal."""
    model.eval()
    bar = None
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=loader.num_images, unit="img", desc=desc, leave=False, file=sys.stderr, dynamic_ncols=True)
    out = []
    with autocast(loader.device, precision):
        for x, _ in loader:
            per_view = [model.features(x)] + ([model.features(x.flip(3))] if views == 2 else [])
            out.append(torch.stack(per_view, 1).float())
            if bar is not None:
                bar.update(len(x))
    if bar is not None:
        bar.close()
    return torch.cat(out)


def feature_loaders(model: nn.Module, train, val, batch_size: int, tta: int, precision: str,
                    generator: torch.Generator, quiet: bool) -> tuple[FeatureLoader, FeatureLoader | None]:
    """The features of the training images (and their mirrors) and of the validation images (with their mirrors
    when `tta`), as loaders for FeatureHead; `train`/`val` are evaluation-mode DeviceLoaders."""
    feats = extract(model, train, 2, precision, "Features (train)", quiet).clone()  # a plain tensor: autograd's
    train_loader = FeatureLoader(feats, train.labels, batch_size, train.device, shuffle=True, generator=generator)
    val_loader = None
    if val is not None:
        feats = extract(model, val, 2 if tta else 1, precision, "Features (val)", quiet).clone()
        val_loader = FeatureLoader(feats, val.labels, val.batch_size, val.device)
    return train_loader, val_loader


PROBE_C = 0.03  # inverse L2 strength as in scikit-learn's LogisticRegression(C): penalty |W|^2 / (2 C n); 0.01-1 measured


def fit_head(model: nn.Module, loader: FeatureLoader, label_smoothing: float) -> float:
    """Fit `model.head` to the frozen features in `loader` (every view of every image) as an L2-regularised
    logistic regression, by full-batch L-BFGS: the convex first stage of LP-FT (Kumar et al., "Fine-Tuning can
    Distort Pretrained Features and Underperform Out-of-Distribution", 2022). Returns the final mean loss."""
    x = loader.features.flatten(0, 1)                                    # (N V, F)
    y = loader.labels.repeat_interleave(loader.features.shape[1])        # (N V,)
    head = model.head
    l2 = 1.0 / (2 * PROBE_C * len(y))
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(x), y, label_smoothing=label_smoothing) + l2 * head.weight.square().sum()
        loss.backward()
        return loss
    with torch.enable_grad():
        opt.step(closure)
        return float(closure().detach())
