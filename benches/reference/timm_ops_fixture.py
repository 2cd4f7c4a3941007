"""PIL reference outputs for kiln's RandAugment operations and bicubic resizing
(kiln-data's `augment::timm`), made with timm 0.4.12's own operation functions on Pillow.

Needs Pillow and timm 0.4.12 (which imports torch):

    python benches/reference/timm_ops_fixture.py \
        --out data/src/augment/timm/fixtures/timm_ops.json

It applies each operation with fixed arguments to a small deterministic RGB image (8x6; the
equalize case uses a 24x12 image, since equalize leaves images of under 256 pixels as they
are) and writes JSON:

- `image`, `equalize_image`: `{width, height, hex}`, the inputs (RGB bytes, row-major, hex);
- `fill`: timm's `img_mean` fill colour for ImageNet, the geometric operations' `fillcolor`;
- `cases`: `{op, arg, resample, hex}`, the output of `timm.data.auto_augment.<op>(image, arg,
  resample=..., fillcolor=fill)` (resample and fill only for the geometric operations);
- `resizes`: `{resample, width, height, hex}`, `image.resize((width, height), resample)`;
- `levels`: `{op, level, negate, arg}`, timm's `LEVEL_TO_ARG[op](level, hparams)` with the
  random sign forced (`negate`) for the operations that draw one.

Pillow 13 refuses `posterize(img, 0)`, which Pillow up to 12.3 turns black; that case is not
in the fixture (kiln turns it black, tested by hand). The committed fixture was made with
Pillow 13.0.0 and timm 0.4.12.
"""
import argparse
import json

import PIL
import timm
from PIL import Image
from timm.data import auto_augment as aa

FILL = tuple(min(255, round(255 * x)) for x in (0.485, 0.456, 0.406))
RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def image():
    w, h = 8, 6
    im = Image.new("RGB", (w, h))
    im.putdata(
        [
            (
                (x * 29 + y * 13 + 20) % 200 + 20,
                (x * 7 + y * 31 + 60) % 180 + 30,
                (x * y * 11 + x * 3 + 90) % 160 + 40,
            )
            for y in range(h)
            for x in range(w)
        ]
    )
    return im


def equalize_image():
    w, h = 24, 12
    im = Image.new("RGB", (w, h))
    im.putdata(
        [((x * x + 3 * y) % 64 + 100, (x * y) % 17 * 9 + 20, (x + y * 24) % 251) for y in range(h) for x in range(w)]
    )
    return im


def encode(im):
    return {"width": im.width, "height": im.height, "hex": im.tobytes().hex()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    img, eq_img = image(), equalize_image()
    cases = []

    def case(op, arg=None, resample=None, src=img):
        fn = getattr(aa, op)
        kwargs = {}
        if resample is not None:
            kwargs = {"resample": RESAMPLE[resample], "fillcolor": FILL}
        out = fn(src, *([] if arg is None else [arg]), **kwargs)
        cases.append({"op": op, "arg": arg, "resample": resample, "hex": out.tobytes().hex()})

    case("auto_contrast")
    case("invert")
    case("equalize", src=eq_img)
    for bits in (1, 3):
        case("posterize", bits)
    for thresh in (26, 128, 200):
        case("solarize", thresh)
    for add in (55, 99):
        case("solarize_add", add)
    for op in ("color", "contrast", "brightness", "sharpness"):
        for factor in (0.19, 0.55, 1.81):
            case(op, factor)
    for degrees, resample in ((27.0, "bicubic"), (-13.5, "bicubic"), (27.0, "bilinear"), (90.0, "bicubic"), (180.0, "bilinear")):
        case("rotate", degrees, resample)
    for op, arg, resample in (
        ("shear_x", 0.27, "bicubic"),
        ("shear_x", -0.15, "bilinear"),
        ("shear_y", -0.27, "bicubic"),
        ("shear_y", 0.15, "bilinear"),
        ("translate_x_rel", 0.405, "bicubic"),
        ("translate_x_rel", -0.1, "bilinear"),
        ("translate_y_rel", -0.405, "bicubic"),
        ("translate_y_rel", 0.1, "bilinear"),
    ):
        case(op, arg, resample)

    resizes = []
    for resample in ("bicubic", "bilinear"):
        for size in ((5, 4), (13, 9)):
            out = img.resize(size, RESAMPLE[resample])
            resizes.append({"resample": resample, **encode(out)})

    levels = []
    hparams = {"translate_const": 100, "img_mean": FILL}
    signed = {"Rotate", "ColorIncreasing", "TranslateYRel"}
    for op in ("Posterize", "PosterizeIncreasing", "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color") + tuple(
        sorted(signed)
    ):
        for level in (0.0, 4.9, 9.7, 10.0):
            for negate in (False, True) if op in signed else (False,):
                aa._randomly_negate = (lambda v: -v) if negate else (lambda v: v)
                (arg,) = aa.LEVEL_TO_ARG[op](level, hparams)
                levels.append({"op": op, "level": level, "negate": negate, "arg": arg})

    fixture = {
        "pillow": PIL.__version__,
        "timm": timm.__version__,
        "fill": list(FILL),
        "image": encode(img),
        "equalize_image": encode(eq_img),
        "cases": cases,
        "resizes": resizes,
        "levels": levels,
    }
    with open(args.out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
