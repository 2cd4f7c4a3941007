"""The guide's MNIST job (pytorch/examples mnist `train.py`), written from kiln's CONTRACT.md
section 1, as the PyTorch reference `kiln-bench mnist --compare-pytorch` runs.

Reads the four idx files (gzip or raw) straight from --data_url, so it needs only torch.
Prints the original's log lines, then one JSON line per epoch:
{"epoch": 1, "train_seconds": ..., "test_seconds": ..., "images_per_second": ..., "accuracy": ...}
"""
import argparse
import gzip
import json
import os
import struct
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def read_idx(folder, stem):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            raw = open(path, "rb").read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            ndim = raw[3]
            dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
            return torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8).reshape(dims)
    raise FileNotFoundError(os.path.join(folder, stem))


def load(folder, prefix, limit):
    images = read_idx(folder, f"{prefix}-images-idx3-ubyte")[:limit]
    labels = read_idx(folder, f"{prefix}-labels-idx1-ubyte")[:limit]
    x = ((images.float() / 255.0) - 0.1307) / 0.3081
    return torch.utils.data.TensorDataset(x.unsqueeze(1), labels.long())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data_url", default="data/mnist")
    p.add_argument("--train_url", default="output")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--test-batch-size", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--lr", type=float, default=1.0)
    p.add_argument("--gamma", type=float, default=0.7)
    p.add_argument("--no-cuda", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--log-interval", type=int, default=10)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of each split")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.no_cuda else "cpu")
    train_set = load(args.data_url, "train", args.limit)
    test_set = load(args.data_url, "t10k", args.limit)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=args.test_batch_size)
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        start = time.perf_counter()
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                print(
                    "Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(
                        epoch, batch_idx * len(data), len(train_loader.dataset),
                        100.0 * batch_idx / len(train_loader), loss.item()))
        sync()
        train_seconds = time.perf_counter() - start
        model.eval()
        test_loss, correct = 0.0, 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction="sum").item()
                correct += output.argmax(dim=1).eq(target).sum().item()
        test_loss /= len(test_loader.dataset)
        test_seconds = time.perf_counter() - start - train_seconds
        print("\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n".format(
            test_loss, correct, len(test_loader.dataset), 100.0 * correct / len(test_loader.dataset)))
        print(json.dumps({
            "epoch": epoch, "train_seconds": train_seconds, "test_seconds": test_seconds,
            "images_per_second": len(train_set) / train_seconds,
            "accuracy": correct / len(test_set), "device": str(device),
            "threads": torch.get_num_threads()}), flush=True)
        scheduler.step()


if __name__ == "__main__":
    main()
