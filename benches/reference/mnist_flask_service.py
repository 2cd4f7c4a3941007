"""The guide's MNIST service as its users run it today: a Flask app (the guide's own web-server
example, `app.run(host="0.0.0.0", port=8080)`) around the `customize_service` steps of the
contract (section 2 of CONTRACT.md), with PyTorch inference. It is the reference that
`kiln-bench serve --compare http://127.0.0.1:8081/` drives for issue 7's serving comparison;
kiln-serve is not involved.

    python3 benches/reference/mnist_flask_service.py --port 8081 [--weights mnist_cnn.pt]

- `POST /`, multipart/form-data: for every form field `k`, its first file is decoded, converted
  to 8-bit grayscale, its shorter side resized to 28 (bilinear), centre-cropped to 28×28,
  scaled to [0, 1] and normalised (0.1307, 0.3081); the answer is `[{k: argmax}]`, one object
  per field, in form order.
- `GET /health` → `{"status": "OK"}`.

Without `--weights` the guide's `Net` keeps its seeded initial weights: the weights do not
change the speed (kiln-bench serve uses a freshly initialised package the same way).
"""

import argparse
import io
import json

import torch
from flask import Flask, Response, request
from PIL import Image
from torchvision import transforms

from mnist_train import Net

PREPROCESS = transforms.Compose([
    transforms.Grayscale(num_output_channels=1),
    transforms.Resize(28, interpolation=transforms.InterpolationMode.BILINEAR),
    transforms.CenterCrop(28),
    transforms.ToTensor(),
    transforms.Normalize((0.1307,), (0.3081,)),
])


def create_app(model):
    app = Flask(__name__)

    @app.route("/", methods=["POST"])
    def predict():
        answer = []
        for field in request.files:
            first = request.files.getlist(field)[0]
            image = Image.open(io.BytesIO(first.read())).convert("L")
            with torch.no_grad():
                label = int(model(PREPROCESS(image).unsqueeze(0)).argmax(dim=1)[0])
            answer.append({field: label})
        return Response(json.dumps(answer), mimetype="application/json")

    @app.route("/health", methods=["GET"])
    def health():
        return Response('{"status": "OK"}', mimetype="application/json")

    return app


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--weights", help="a state_dict saved by the guide's train.py")
    args = parser.parse_args()
    torch.manual_seed(1)
    model = Net()
    if args.weights:
        model.load_state_dict(torch.load(args.weights, map_location="cpu"))
    model.eval()
    create_app(model).run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
