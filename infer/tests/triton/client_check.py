"""Drives kiln-serve with Triton's own Python client (`tritonclient.http`), as a Triton user
would: server and model readiness, model metadata, and inference with JSON and with binary
tensor data, for encoded images (BYTES) and for preprocessed inputs (FP32).

Usage: python client_check.py URL MODEL IMAGE...   (URL without the scheme: 127.0.0.1:8080)
Prints one JSON line per request: {"mode", "labels", "probabilities"} for a classifier,
{"mode", "detection_boxes", "detection_scores", "detection_classes", "detection_image"} for a
detector; exits non-zero on any failure. Run by kiln-infer's tests (KILN_TRITON_PYTHON).
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient


def main():
    url, model, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    client = httpclient.InferenceServerClient(url=url)
    assert client.is_server_live(), "not live"
    assert client.is_server_ready(), "not ready"
    assert client.is_model_ready(model), "model not ready"
    meta = client.get_model_metadata(model)
    fp32 = next(i for i in meta["inputs"] if i["datatype"] == "FP32")
    channels, height, width = fp32["shape"][1:]

    images = np.array([open(p, "rb").read() for p in paths], dtype=np.object_)
    for binary in (False, True):
        inp = httpclient.InferInput("image", [len(paths)], "BYTES")
        if binary:
            inp.set_data_from_numpy(images, binary_data=True)
        else:
            # JSON carries BYTES as strings: kiln reads them as base64.
            import base64
            encoded = np.array([base64.b64encode(b).decode() for b in images], dtype=np.object_)
            inp.set_data_from_numpy(encoded, binary_data=False)
        mode = "bytes-binary" if binary else "bytes-json"
        names = [o["name"] for o in meta["outputs"]]
        outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
        result = client.infer(model, [inp], outputs=outputs)
        if "probabilities" in names:
            probs = result.as_numpy("probabilities")
            labels = [text(l) for l in result.as_numpy("label")]
            assert probs.shape[0] == len(paths), probs.shape
            print(json.dumps({"mode": mode, "labels": labels, "probabilities": probs.tolist()}))
        else:
            boxes = result.as_numpy("detection_boxes")
            assert boxes.ndim == 2 and boxes.shape[1] == 4, boxes.shape
            print(json.dumps({"mode": mode,
                              "detection_boxes": boxes.tolist(),
                              "detection_scores": result.as_numpy("detection_scores").tolist(),
                              "detection_classes": [text(c) for c in result.as_numpy("detection_classes")],
                              "detection_image": result.as_numpy("detection_image").tolist()}))

    zeros = np.zeros((2, channels, height, width), dtype=np.float32)
    inp = httpclient.InferInput("input", list(zeros.shape), "FP32")
    inp.set_data_from_numpy(zeros, binary_data=True)
    result = client.infer(model, [inp])
    first = meta["outputs"][0]["name"]
    got = result.as_numpy(first)
    assert got is not None, first
    print(json.dumps({"mode": "fp32-binary", first: got.tolist()}))


def text(value):
    return value.decode() if isinstance(value, bytes) else value


if __name__ == "__main__":
    main()
