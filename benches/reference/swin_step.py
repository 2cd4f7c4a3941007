"""The training step of microsoft/Swin-Transformer's `main.py` (`train_one_epoch`, in full
precision): forward, SoftTargetCrossEntropy on mixed, smoothed targets (timm's `mixup_target`),
backward, `clip_grad_norm_(..., 5.0)`, AdamW with the official weight-decay grouping
(`set_weight_decay`: no decay for 1-D parameters, biases, `no_weight_decay()` and
`no_weight_decay_keywords()`); and the evaluation forward under `no_grad` (`validate`). On a
fixed random batch, so only the model's speed is measured. The PyTorch reference of
`kiln-bench swin`.

The model is the official `models/swin_transformer.py` when --swin-repo names it (the
repository's folder, its `models/` folder, or the file itself; it is not part of kiln: export
it with `git -C <Swin-Transformer checkout> show HEAD:models/swin_transformer.py > FILE`), else
timm's `timm.models.swin_transformer.SwinTransformer`. Both need timm (the official file
imports timm 0.4.12's layers).

Prints one JSON line: {"arch", "batch", "device", "train_images_per_second",
"eval_images_per_second", "threads", "source"}.
"""
import importlib.util
import os

import timm
import torch
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy

import step_common

# embed_dim, depths, num_heads of the official configs (configs/swin/swin_*_patch4_window7_224*.yaml).
SHAPES = {
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24]),
    "small": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32]),
    "large": (192, [2, 2, 18, 2], [6, 12, 24, 48]),
}


def model_class(swin_repo):
    """SwinTransformer from the official file under swin_repo, or timm's; and where it is from."""
    if not swin_repo:
        from timm.models.swin_transformer import SwinTransformer
        return SwinTransformer, f"timm {timm.__version__} SwinTransformer"
    candidates = [swin_repo] if os.path.isfile(swin_repo) else [
        os.path.join(swin_repo, "models", "swin_transformer.py"), os.path.join(swin_repo, "swin_transformer.py")]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
        raise SystemExit(f"--swin-repo {swin_repo}: no swin_transformer.py in {candidates}")
    spec = importlib.util.spec_from_file_location("official_swin_transformer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SwinTransformer, "microsoft/Swin-Transformer models/swin_transformer.py"


def param_groups(model, weight_decay):
    """The official `set_weight_decay`: the groups AdamW decays and does not."""
    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    keywords = model.no_weight_decay_keywords() if hasattr(model, "no_weight_decay_keywords") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim == 1 or name.endswith(".bias") or name in skip or any(k in name for k in keywords):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def main():
    p = step_common.parser(__doc__.split("\n\n")[0])
    p.add_argument("-m", "--model", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--window", type=int, default=7)
    p.add_argument("--drop-path", type=float, default=0.1, help="MODEL.DROP_PATH_RATE")
    p.add_argument("--lr", type=float, default=1.25e-4)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--clip-grad", type=float, default=5.0)
    p.add_argument("--mix-lam", type=float, default=0.7, help="the mixing weight of the targets")
    p.add_argument("--smoothing", type=float, default=0.1, help="MODEL.LABEL_SMOOTHING")
    p.add_argument("--swin-repo", help="the official repository, or its models/swin_transformer.py")
    args = p.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    swin, source = model_class(args.swin_repo)
    embed_dim, depths, num_heads = SHAPES[args.model]
    model = swin(img_size=args.image_size, patch_size=4, in_chans=3, num_classes=args.classes,
                 embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=args.window,
                 mlp_ratio=4.0, qkv_bias=True, drop_rate=0.0, drop_path_rate=args.drop_path,
                 ape=False, patch_norm=True).to(device)
    criterion = SoftTargetCrossEntropy()
    optimizer = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, eps=1e-8,
                                  betas=(0.9, 0.999), weight_decay=args.weight_decay)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    labels = torch.arange(args.batch_size, device=device) % args.classes
    targets = mixup_target(labels, args.classes, lam=args.mix_lam, smoothing=args.smoothing, device=device)

    def train_step():
        loss = criterion(model(x), targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        optimizer.step()
        loss.item()

    def eval_step():
        with torch.no_grad():
            model(x).cpu()

    step_common.report(args, f"swin-{args.model}", model, train_step, eval_step, source=source)


if __name__ == "__main__":
    main()
