"""Peer (b): the tutorial-style PyTorch loop.

A Dataset converts each image to a float tensor (as torchvision's ToTensor + Normalize do), a DataLoader batches
them, the model is the same LeNet-5 written with nn.Conv2d / nn.MaxPool2d, Adam at 1e-3. An epoch's time covers
training and the validation pass, as tenfold's and Keras' do.
"""
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common import args, channel_stats, load_split, report


class ImageDataset(Dataset):
    def __init__(self, x, y, mean, std):
        self.x, self.y = x, y
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        img = torch.from_numpy(self.x[i]).permute(2, 0, 1).float().div(255)  # ToTensor
        return (img - self.mean) / self.std, int(self.y[i])                 # Normalize


def lenet5():
    return nn.Sequential(
        nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1024, 120), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(120, 84), nn.ReLU(), nn.Dropout(0.5), nn.Linear(84, 10))


def main():
    path, epochs, batch, device = args()
    tx, ty, vx, vy = load_split(path)
    mean, std = channel_stats(tx)
    train = DataLoader(ImageDataset(tx, ty, mean, std), batch_size=batch, shuffle=True)
    val = DataLoader(ImageDataset(vx, vy, mean, std), batch_size=batch)
    torch.manual_seed(0)
    model = lenet5().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for x, y in train:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total += loss.item() * len(y)
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += (model(x.to(device)).argmax(1).cpu() == y).sum().item()
        report(epoch, time.perf_counter() - t0, total / len(ty), correct / len(vy), len(ty))


if __name__ == "__main__":
    main()
