"""The PyTorch side of `kiln-bench ops --device cuda`: the ops listed in the spec file that
benches/src/gpu_ops.rs writes (every ResNet-50 and YOLOX-s convolution pass, BatchNorm,
pooling, linear, add + relu, the SGD step), timed the same way on the same GPU: warm-up runs,
then the median of timed runs, each waited for with torch.cuda.synchronize().

Convolution passes call what autograd calls: F.conv2d forward, and
aten.convolution_backward with one output asked for (data or filter gradient), through cuDNN
with PyTorch's defaults (TF32 allowed for convolutions, no benchmark mode).

Prints one JSON line: {"torch", "cuda", "cudnn", "ms": {op name: median ms per call}}.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, warmup, reps, device):
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(max(reps, 1)):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def randn(*shape, device, grad=False):
    return torch.randn(*shape, device=device, requires_grad=grad)


def conv_pass(spec, device):
    n, c_in, h, w = spec["input"]
    weight = randn(*spec["weight"], device=device)
    x = randn(n, c_in, h, w, device=device)
    args = dict(stride=spec["stride"], padding=spec["padding"], dilation=spec["dilation"], groups=spec["groups"])
    if spec["pass"] == "forward":
        return lambda: F.conv2d(x, weight, None, **args)
    dy = torch.randn_like(F.conv2d(x, weight, None, **args))
    mask = [spec["pass"] == "data_grad", spec["pass"] == "filter_grad", False]
    return lambda: torch.ops.aten.convolution_backward(
        dy, x, weight, None, args["stride"], args["padding"], args["dilation"], False, [0, 0], args["groups"], mask
    )


def forward_backward(fn):
    def run():
        fn().sum().backward()
    return run


def build(spec, device):
    kind = spec["kind"]
    if kind == "conv":
        return conv_pass(spec, device)
    if kind == "batch_norm":
        x = randn(*spec["shape"], device=device, grad=True)
        bn = torch.nn.BatchNorm2d(spec["shape"][1]).to(device).train()
        return forward_backward(lambda: bn(x))
    if kind == "max_pool":
        x = randn(*spec["shape"], device=device, grad=True)
        return forward_backward(lambda: F.max_pool2d(x, 3, 2, 1))
    if kind == "linear":
        rows, features = spec["input"]
        x = randn(rows, features, device=device, grad=True)
        w = randn(spec["out"], features, device=device, grad=True)
        b = randn(spec["out"], device=device, grad=True)
        return forward_backward(lambda: F.linear(x, w, b))
    if kind == "add_relu":
        a = randn(*spec["shape"], device=device, grad=True)
        b = randn(*spec["shape"], device=device, grad=True)
        return forward_backward(lambda: F.relu(a + b))
    if kind == "sgd_resnet50":
        import torchvision
        model = torchvision.models.resnet50().to(device)
        model(randn(2, 3, 64, 64, device=device)).sum().backward()
        optim = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        optim.step()  # creates the momentum buffers, as kiln's untimed first step does
        return optim.step
    raise ValueError(f"unknown op kind {kind!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    with open(args.spec) as f:
        specs = json.load(f)
    ms = {}
    for spec in specs:
        ms[spec["name"]] = timed(build(spec, device), args.warmup, args.reps, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(json.dumps({
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None,
        "ms": ms,
    }))


if __name__ == "__main__":
    main()
