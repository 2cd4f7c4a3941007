"""What kiln-bench's step references share (`resnet_step.py`, `swin_step.py`): the common
flags, the timing (one warm-up run, then --steps timed runs), and the one JSON line kiln-bench
reads: {"arch", "batch", "device", "train_images_per_second", "eval_images_per_second",
"threads", ...}.
"""
import argparse
import json
import time

import torch


def parser(description):
    """The flags every step reference takes; a script adds its own."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


def timed(fn, steps, sync):
    """Mean seconds of fn over `steps` runs after one warm-up run."""
    fn()  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync()
    return (time.perf_counter() - start) / steps


def report(args, arch, model, train_step, eval_step, **extra):
    """Times train_step (model in train mode), then eval_step (eval mode), and prints the line."""
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.train()
    train = timed(train_step, args.steps, sync)
    model.eval()
    evaluate = timed(eval_step, args.steps, sync)
    print(json.dumps({
        "arch": arch, "batch": args.batch_size, "device": str(device),
        "train_images_per_second": args.batch_size / train,
        "eval_images_per_second": args.batch_size / evaluate,
        "threads": torch.get_num_threads(), **extra}), flush=True)
