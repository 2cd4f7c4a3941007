"""The PyTorch side of `kiln-bench ops`: the same ops, shapes and passes as
benches/src/ops.rs, timed the same way (warm-up runs, then the median of timed runs), with
torch's CPU kernels on the given thread count.

Prints one JSON line: {op name: median ms per call}. The op names are ops.rs's.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from mnist_train import Net


def randn(*shape, grad):
    return torch.randn(*shape, requires_grad=grad)


def timed(name, pass_, f):
    """(name, run): run() executes f (and the backward of its sum) and returns seconds."""
    def run():
        start = time.perf_counter()
        y = f()
        if pass_ == "fwd+bwd":
            y.sum().backward()
        return time.perf_counter() - start
    return f"{name} {pass_}", run


def conv(n, c_in, side, c_out, k, stride, pad, bias, x_grad, w_grad):
    x = randn(n, c_in, side, side, grad=x_grad)
    w = randn(c_out, c_in, k, k, grad=w_grad)
    b = randn(c_out, grad=w_grad) if bias else None
    return lambda: F.conv2d(x, w, b, stride, pad)


def net_step():
    net = Net()
    x = randn(64, 1, 28, 28, grad=False)
    return timed("MNIST Net b64 whole", "fwd+bwd", lambda: net(x))


def adadelta_step():
    net = Net()
    optim = torch.optim.Adadelta(net.parameters(), lr=1.0)
    x = randn(64, 1, 28, 28, grad=False)

    def run():
        optim.zero_grad()
        net(x).sum().backward()
        start = time.perf_counter()
        optim.step()
        return time.perf_counter() - start
    return "MNIST Adadelta step (Net parameters)", run


def ops():
    conv1 = lambda xg, wg: conv(64, 1, 28, 32, 3, 1, 0, True, xg, wg)
    conv2 = lambda xg, wg: conv(64, 32, 26, 64, 3, 1, 0, True, xg, wg)
    stem = lambda xg, wg: conv(32, 3, 224, 64, 7, 2, 3, False, xg, wg)
    stage1 = lambda xg, wg: conv(32, 64, 56, 64, 3, 1, 1, False, xg, wg)
    stage3 = lambda xg, wg: conv(32, 256, 14, 256, 3, 1, 1, False, xg, wg)
    stage4 = lambda xg, wg: conv(32, 512, 7, 512, 3, 1, 1, False, xg, wg)
    pool_in = randn(64, 64, 24, 24, grad=True)
    dropout_in = randn(64, 64, 12, 12, grad=True)
    fc_in, fc_w, fc_b = randn(64, 9216, grad=True), randn(128, 9216, grad=True), randn(128, grad=True)
    logits = randn(64, 10, grad=True)
    bn_in = randn(32, 64, 112, 112, grad=True)
    bn = torch.nn.BatchNorm2d(64).train()
    resnet_pool_in = randn(32, 64, 112, 112, grad=True)
    return [
        timed("MNIST conv1 1→32 3×3 on 28×28", "fwd", conv1(False, True)),
        timed("MNIST conv1 (w)", "fwd+bwd", conv1(False, True)),
        timed("MNIST conv2 32→64 3×3 on 26×26", "fwd", conv2(True, True)),
        timed("MNIST conv2 (x+w)", "fwd+bwd", conv2(True, True)),
        timed("MNIST conv2 (x)", "fwd+bwd", conv2(True, False)),
        timed("MNIST conv2 (w)", "fwd+bwd", conv2(False, True)),
        timed("MNIST max-pool 2×2 [64,64,24,24]", "fwd+bwd", lambda: F.max_pool2d(pool_in, 2, 2)),
        timed("MNIST max-pool 2×2 + ReLU [64,64,24,24]", "fwd+bwd",
              lambda: F.relu(F.max_pool2d(pool_in, 2, 2))),
        # kiln's fused pooling and ReLU: the same ops in PyTorch.
        timed("MNIST kiln max-pool 2×2 + ReLU [64,64,24,24]", "fwd+bwd",
              lambda: F.relu(F.max_pool2d(pool_in, 2, 2))),
        timed("MNIST dropout 0.25 [64,64,12,12]", "fwd+bwd",
              lambda: F.dropout(dropout_in, 0.25, training=True)),
        # kiln's own dropout op: the same op in PyTorch.
        timed("MNIST kiln dropout 0.25 [64,64,12,12]", "fwd+bwd",
              lambda: F.dropout(dropout_in, 0.25, training=True)),
        timed("MNIST linear 9216→128", "fwd+bwd", lambda: F.linear(fc_in, fc_w, fc_b)),
        timed("MNIST log-softmax [64,10]", "fwd+bwd", lambda: F.log_softmax(logits, 1)),
        net_step(),
        adadelta_step(),
        timed("ResNet conv 7×7/2 3→64 on 224×224", "fwd", stem(False, True)),
        timed("ResNet conv 7×7/2 (w)", "fwd+bwd", stem(False, True)),
        timed("ResNet conv 3×3 64→64 on 56×56", "fwd", stage1(True, True)),
        timed("ResNet conv 3×3 64→64 (x+w)", "fwd+bwd", stage1(True, True)),
        timed("ResNet conv 3×3 256→256 on 14×14", "fwd", stage3(True, True)),
        timed("ResNet conv 3×3 256→256 (x+w)", "fwd+bwd", stage3(True, True)),
        timed("ResNet conv 3×3 512→512 on 7×7", "fwd", stage4(True, True)),
        timed("ResNet conv 3×3 512→512 (x+w)", "fwd+bwd", stage4(True, True)),
        timed("ResNet batchnorm [32,64,112,112] train", "fwd+bwd", lambda: bn(bn_in)),
        # kiln's own BatchNorm forward: the same op in PyTorch.
        timed("ResNet kiln batchnorm [32,64,112,112] train", "fwd+bwd", lambda: bn(bn_in)),
        timed("ResNet max-pool 3×3/2 pad 1 [32,64,112,112]", "fwd+bwd",
              lambda: F.max_pool2d(resnet_pool_in, 3, 2, 1)),
    ] + swin_ops()


def swin_ops():
    """Swin-T's first stage at batch 8, as the official model runs it (nn.Linear, q @ k^T,
    nn.Softmax, nn.LayerNorm, nn.GELU)."""
    tokens, windows = randn(8, 3136, 96, grad=True), randn(512, 49, 96, grad=True)
    qkv_w, qkv_b = randn(288, 96, grad=True), randn(288, grad=True)
    fc1_w, fc1_b = randn(384, 96, grad=True), randn(384, grad=True)
    q, k = randn(512, 3, 49, 32, grad=True), randn(512, 3, 49, 32, grad=True)
    scores = randn(512, 3, 49, 49, grad=True)
    hidden = randn(8, 3136, 384, grad=True)
    norm = torch.nn.LayerNorm(96)
    qkv = lambda: F.linear(windows, qkv_w, qkv_b)
    attention = lambda: q @ k.transpose(-2, -1)
    return [
        timed("Swin qkv linear [512,49,96]→288", "fwd", qkv),
        timed("Swin qkv linear [512,49,96]→288", "fwd+bwd", qkv),
        timed("Swin MLP linear [8,3136,96]→384", "fwd+bwd", lambda: F.linear(tokens, fc1_w, fc1_b)),
        timed("Swin q·kᵀ [512,3,49,32]", "fwd", attention),
        timed("Swin q·kᵀ [512,3,49,32]", "fwd+bwd", attention),
        timed("Swin softmax [512,3,49,49]", "fwd+bwd", lambda: torch.softmax(scores, -1)),
        timed("Swin LayerNorm [8,3136,96]", "fwd+bwd", lambda: norm(tokens)),
        timed("Swin GELU [8,3136,384]", "fwd+bwd", lambda: F.gelu(hidden)),
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {}
    for name, run in ops():
        for _ in range(args.warmup):
            run()
        result[name] = 1e3 * statistics.median(run() for _ in range(max(args.reps, 1)))
    print(json.dumps(result, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
