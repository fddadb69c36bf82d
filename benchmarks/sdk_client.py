"""Roboflow's ``inference_sdk.InferenceHTTPClient`` in its fastest batch configuration.

Runs in the benchmark's own venv (``benchmarks/.venv-sdk``), never the project's.
``infer`` on the whole list of paths, legacy (v0) mode, ``max_concurrent_requests=N``;
client-side downsizing stays off (the SDK default), so files are sent as they are.
usage: sdk_client.py MANIFEST API_URL MODEL OUTPUT CONCURRENCY [API_KEY]
Writes one JSONL row per input, in input order (the SDK returns results in order).
"""

import json
import sys

from inference_sdk import InferenceConfiguration, InferenceHTTPClient


def main(manifest: str, api_url: str, model: str, output: str, n: int, key: str) -> int:
    with open(manifest, encoding="utf-8") as handle:
        refs = [line.rstrip("\n") for line in handle if line.strip()]
    client = InferenceHTTPClient(api_url=api_url, api_key=key).select_api_v0()
    client.configure(InferenceConfiguration(max_concurrent_requests=n))
    try:
        results = client.infer(refs, model_id=model)
    except Exception as exc:  # the SDK raises for the whole list when one image fails
        print(f"sdk: the whole batch failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if isinstance(results, dict):
        results = [results]
    with open(output, "w", encoding="utf-8") as out:
        for ref, answer in zip(refs, results, strict=True):
            row = {"id": ref, "status": "ok", "top": answer.get("top")}
            row["confidence"] = answer.get("confidence")
            out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    a = sys.argv
    sys.exit(main(a[1], a[2], a[3], a[4], int(a[5]), a[6] if len(a) > 6 else "bench"))
