"""The torchvision ImageNet recipe's training step (pytorch/examples imagenet `main.py`):
ResNet, CrossEntropy, SGD(momentum 0.9, weight decay 1e-4), on random 224x224 batches, so only
the model's speed is measured. The PyTorch reference of `kiln-bench imagenet`.

Prints one JSON line: {"arch", "batch", "device", "train_images_per_second",
"eval_images_per_second", "threads"}.
"""
import torch
import torchvision

import step_common


def main():
    p = step_common.parser(__doc__.split("\n\n")[0])
    p.add_argument("-a", "--arch", default="resnet18")
    args = p.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
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

    step_common.report(args, args.arch, model, train_step, eval_step)


if __name__ == "__main__":
    main()
