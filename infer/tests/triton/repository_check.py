"""Drives kiln-serve's model repository with Triton's own Python client (`tritonclient.http`):
the repository index, unloading a model, loading it again, and a load that fails.

Usage: python repository_check.py URL MODEL BROKEN   (URL without the scheme: 127.0.0.1:8080)
MODEL is a model of the repository that loads; BROKEN one whose latest version cannot load.
Prints one JSON line per step; exits non-zero on any failure. Run by kiln-infer's tests
(KILN_TRITON_PYTHON).
"""
import json
import sys

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main():
    url, model, broken = sys.argv[1:4]
    client = httpclient.InferenceServerClient(url=url)
    index = client.get_model_repository_index()
    print(json.dumps({"step": "index", "models": index}))
    client.unload_model(model)
    print(json.dumps({"step": "unloaded", "ready": client.is_model_ready(model)}))
    client.load_model(model)
    print(json.dumps({"step": "loaded", "ready": client.is_model_ready(model)}))
    try:
        client.load_model(broken)
        print(json.dumps({"step": "broken", "error": None}))
    except InferenceServerException as e:
        print(json.dumps({"step": "broken", "error": e.message()}))


if __name__ == "__main__":
    main()
