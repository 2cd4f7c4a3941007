"""Forward-equality fixtures for kiln's Swin Transformer, made with the official model
(microsoft/Swin-Transformer, MIT) and its own `load_pretrained`.

The official files are not part of kiln: export them from the repository and name them on the
command line (needs torch and timm 0.4.12, which the official model file imports):

    git -C <Swin-Transformer checkout> show HEAD:models/swin_transformer.py > /tmp/swin_transformer.py
    git -C <Swin-Transformer checkout> show HEAD:utils.py > /tmp/swin_utils.py
    python benches/reference/swin_fixture.py --model-py /tmp/swin_transformer.py \
        --utils-py /tmp/swin_utils.py --out models/tests/fixtures/swin

It writes to --out:

- `swin_micro.pth`: `{'model': state_dict}` (the official checkpoint layout, buffers
  `relative_position_index` and `attn_mask` included) of `SwinTransformer(img_size=56,
  patch_size=4, in_chans=3, num_classes=10, embed_dim=32, depths=[2, 2], num_heads=[2, 4],
  window_size=7, mlp_ratio=4, qkv_bias=True, ape=False, patch_norm=True)`, every parameter
  random (LayerNorm weights and biases, every bias, and the relative position bias tables with
  std 0.5 so that the bias matters);
- `swin_micro_ape.pth`: the same for a smaller APE model (img 32, embed 16, window 4);
- `swin_micro.json`: the configurations, the input formula, the official logits, pooled features
  and a sample of stage 0's output of `swin_micro.pth`; the logits of the window-14 model the
  official `load_pretrained` makes of `swin_micro.pth` (bias tables interpolated 13×13 → 27×27),
  and of the img-64 APE model it makes of `swin_micro_ape.pth` (APE interpolated 8×8 → 16×16);
  and `torch.nn.functional.interpolate(mode='bicubic')` of a few bias tables.

Inputs are `x[n, c, h, w] = sin(0.1·(7n + 3c + 0.5h + w)) + 0.5·cos(0.013·h·w + 0.9c + 1.7n)`,
computed in float64 and rounded to float32.
"""

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
import types

import torch
import torch.nn.functional as F

SEED = 20240607
INPUT_FORMULA = "x[n,c,h,w] = sin(0.1*(7n + 3c + 0.5h + w)) + 0.5*cos(0.013*h*w + 0.9c + 1.7n), float64 then float32"

MICRO = dict(img_size=56, patch_size=4, in_chans=3, num_classes=10, embed_dim=32, depths=[2, 2],
             num_heads=[2, 4], window_size=7, mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0,
             drop_path_rate=0.0, ape=False, patch_norm=True)
MICRO_APE = dict(MICRO, img_size=32, embed_dim=16, window_size=4, ape=True)
# Stage-0 output tokens (after patch merging, [N, 49, 64]) recorded in the JSON.
STAGE0_TOKENS = [0, 24, 48]


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def images(n, side):
    nn_, c, h, w = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(3, dtype=torch.float64),
                                  torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64),
                                  indexing="ij")
    x = torch.sin(0.1 * (7 * nn_ + 3 * c + 0.5 * h + w)) + 0.5 * torch.cos(0.013 * h * w + 0.9 * c + 1.7 * nn_)
    return x.float()


@torch.no_grad()
def randomise(model, generator):
    """Every parameter random, not only those the default initialisation randomises."""
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=generator)
        if "relative_position_bias_table" in name or name == "absolute_pos_embed":
            value = 0.5 * noise
        elif p.dim() == 1 and name.endswith(".weight"):  # LayerNorm scales
            value = 1.0 + 0.3 * noise
        elif p.dim() == 1:  # every bias
            value = 0.2 * noise
        else:  # Linear and Conv2d weights, scaled by their fan-in
            value = noise / math.sqrt(p[0].numel())
        p.copy_(value)


def official_load(utils, model, path):
    """The official `load_pretrained` (config.MODEL.PRETRAINED = path)."""
    config = types.SimpleNamespace(MODEL=types.SimpleNamespace(PRETRAINED=path))
    utils.load_pretrained(config, model, logging.getLogger("swin_fixture"))
    return model.eval()


def floats(t):
    return t.detach().float().reshape(-1).tolist()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-py", required=True, help="the official models/swin_transformer.py")
    parser.add_argument("--utils-py", required=True, help="the official utils.py (load_pretrained)")
    parser.add_argument("--out", default="models/tests/fixtures/swin")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    swin = load_module("official_swin_transformer", args.model_py)
    utils = load_module("official_swin_utils", args.utils_py)
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    fixture = {"source": "microsoft/Swin-Transformer models/swin_transformer.py and utils.py load_pretrained",
               "input": INPUT_FORMULA}

    # The micro model: logits, pooled features, stage 0's output.
    model = swin.SwinTransformer(**MICRO)
    randomise(model, generator)
    model.eval()
    micro_path = os.path.join(args.out, "swin_micro.pth")
    torch.save({"model": model.state_dict()}, micro_path)
    x = images(2, 56)
    with torch.no_grad():
        stage0 = model.layers[0](model.pos_drop(model.patch_embed(x)))
        features = model.forward_features(x)
        logits = model(x)
    fixture["micro"] = {
        "checkpoint": "swin_micro.pth",
        "config": MICRO,
        "input_shape": list(x.shape),
        "logits": floats(logits),
        "features": floats(features),
        "stage0_tokens": STAGE0_TOKENS,
        "stage0_shape": list(stage0.shape),
        "stage0": floats(stage0[:, STAGE0_TOKENS, :]),
    }

    # The official fine-tuning load into a window-14 model: stage 0's tables 13×13 → 27×27.
    window14 = dict(MICRO, window_size=14)
    target = swin.SwinTransformer(**window14)
    official_load(utils, target, micro_path)
    with torch.no_grad():
        fixture["micro_window14"] = {"config": window14, "logits": floats(target(x))}

    # The APE model and the official load into a twice larger input (APE 8×8 → 16×16).
    ape = swin.SwinTransformer(**MICRO_APE)
    randomise(ape, generator)
    ape.eval()
    ape_path = os.path.join(args.out, "swin_micro_ape.pth")
    torch.save({"model": ape.state_dict()}, ape_path)
    x32, x64 = images(2, 32), images(2, 64)
    larger = dict(MICRO_APE, img_size=64)
    target = swin.SwinTransformer(**larger)
    official_load(utils, target, ape_path)
    with torch.no_grad():
        fixture["ape"] = {"checkpoint": "swin_micro_ape.pth", "config": MICRO_APE, "logits": floats(ape(x32))}
        fixture["ape_img64"] = {"config": larger, "logits": floats(target(x64))}

    # Bicubic resizing of [L, nH] tables, as load_pretrained does it.
    cases = []
    for heads, s1, s2 in [(2, 3, 5), (2, 13, 23), (3, 5, 3)]:
        table = torch.randn(s1 * s1, heads, generator=generator)
        resized = F.interpolate(table.permute(1, 0).view(1, heads, s1, s1), size=(s2, s2), mode="bicubic")
        resized = resized.view(heads, s2 * s2).permute(1, 0)
        cases.append({"heads": heads, "from": s1, "to": s2, "table": floats(table), "resized": floats(resized)})
    fixture["bicubic"] = cases

    with open(os.path.join(args.out, "swin_micro.json"), "w") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    for name in ["swin_micro.pth", "swin_micro_ape.pth", "swin_micro.json"]:
        print(f"{name}: {os.path.getsize(os.path.join(args.out, name))} bytes")
    print("logits[0]:", [round(v, 4) for v in floats(logits)[:10]])


if __name__ == "__main__":
    main()
