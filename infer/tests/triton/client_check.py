"""Drives kiln-serve with Triton's own Python client (`tritonclient.http`), as a Triton user
would: server and model readiness, model metadata, and inference with JSON and with binary
tensor data, for encoded images (BYTES) and for preprocessed inputs (FP32).

Usage: python client_check.py URL MODEL IMAGE...   (URL without the scheme: 127.0.0.1:8080)
Prints one JSON line per request: {"mode", "labels", "probabilities"}; exits non-zero on any
failure. Run by kiln-infer's test `tritonclient_drives_kiln_serve` (KILN_TRITON_PYTHON).
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
        outputs = [
            httpclient.InferRequestedOutput("probabilities", binary_data=binary),
            httpclient.InferRequestedOutput("label", binary_data=binary),
        ]
        result = client.infer(model, [inp], outputs=outputs)
        probs = result.as_numpy("probabilities")
        labels = [l.decode() if isinstance(l, bytes) else l for l in result.as_numpy("label")]
        assert probs.shape[0] == len(paths), probs.shape
        print(json.dumps({"mode": "bytes-binary" if binary else "bytes-json",
                          "labels": labels, "probabilities": probs.tolist()}))

    zeros = np.zeros((2, channels, height, width), dtype=np.float32)
    inp = httpclient.InferInput("input", list(zeros.shape), "FP32")
    inp.set_data_from_numpy(zeros, binary_data=True)
    result = client.infer(model, [inp])
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, meta["outputs"][0]["shape"][1]), probs.shape
    print(json.dumps({"mode": "fp32-binary", "labels": [l.decode() for l in result.as_numpy("label")],
                      "probabilities": probs.tolist()}))


if __name__ == "__main__":
    main()
