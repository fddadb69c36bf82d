"""The floor: aiohttp + a fixed pool of N requests in flight + pybase64; nothing else.

No retries, resume, progress, rate control or error rows beyond the status. Reads a .txt
manifest (one path or http URL per line) and writes one JSONL row per line.
usage: lean_client.py MANIFEST API_URL MODEL OUTPUT CONCURRENCY [API_KEY]
"""

import asyncio
import sys

import aiohttp
import orjson
import pybase64

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def main(manifest: str, api_url: str, model: str, output: str, n: int, key: str) -> None:
    # Plain blocking file I/O on the loop: small files from the page cache take microseconds,
    # less than a hop to a thread. That is the floor this script stands for.
    lines = (line.rstrip("\n") for line in open(manifest, encoding="utf-8"))  # noqa: ASYNC230, SIM115
    out = open(output, "wb")  # noqa: ASYNC230, SIM115
    url = f"{api_url}/{model}"

    async def worker(session: aiohttp.ClientSession) -> None:
        for ref in lines:  # the shared generator is the sliding window: N requests in flight
            is_url = ref.startswith(("http://", "https://"))
            params = {"api_key": key, "image": ref} if is_url else {"api_key": key}
            if is_url:
                body = b""
            else:
                with open(ref, "rb") as handle:  # noqa: ASYNC230
                    body = pybase64.b64encode(handle.read())
            async with session.post(url, params=params, data=body, headers=FORM) as response:
                status, payload = response.status, await response.read()
            answer = orjson.loads(payload) if status == 200 else {}
            row = {"id": ref, "status": "ok" if status == 200 else "error", "http_status": status}
            row.update(top=answer.get("top"), confidence=answer.get("confidence"))
            row["predictions"] = answer.get("predictions")
            out.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))

    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(n)))
    out.close()


if __name__ == "__main__":
    a = sys.argv
    asyncio.run(main(a[1], a[2], a[3], a[4], int(a[5]), a[6] if len(a) > 6 else "bench"))
