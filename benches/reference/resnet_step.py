"""The torchvision ImageNet recipe's training step (pytorch/examples imagenet `main.py`):
ResNet, CrossEntropy, SGD(momentum 0.9, weight decay 1e-4), on random 224x224 batches, so only
the model's speed is measured. The PyTorch reference of `kiln-bench imagenet`.

Prints one JSON line: {"arch", "batch", "device", "train_images_per_second",
"eval_images_per_second", "threads"}.
"""
import argparse
import json
import time

import torch
import torchvision


def timed(fn, steps, sync):
    fn()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-a", "--arch", default="resnet18")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = torchvision.models.__dict__[args.arch](num_classes=args.classes).to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    y = torch.randint(0, args.classes, (args.batch_size,), device=device)

    def train_step():
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    def eval_step():
        with torch.no_grad():
            model(x).argmax(1).cpu()

    model.train()
    train = timed(train_step, args.steps, sync)
    model.eval()
    evaluate = timed(eval_step, args.steps, sync)
    print(json.dumps({
        "arch": args.arch, "batch": args.batch_size, "device": str(device),
        "train_images_per_second": args.batch_size / train,
        "eval_images_per_second": args.batch_size / evaluate,
        "threads": torch.get_num_threads()}), flush=True)


if __name__ == "__main__":
    main()
