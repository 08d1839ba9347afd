"""A tus client (tuspy) driven by cli/tests/tus_clients.rs.

    tuspy_client.py ENDPOINT FILE BUCKET KEY CHUNK_BYTES [--token T] [--api-key K]
                    [--url UPLOAD_URL] [--pause-at N]

Creates an upload at ENDPOINT/v1/uploads (or resumes UPLOAD_URL: tuspy asks the server
for the offset with HEAD) and sends FILE in CHUNK_BYTES pieces. Prints `url <URL>` once
the upload exists and `offset <N>` after every piece. With --pause-at it stops sending at
that offset, prints `paused`, and waits to be killed."""

import argparse
import sys
import time

from tusclient import client


def main():
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("file")
    p.add_argument("bucket")
    p.add_argument("key")
    p.add_argument("chunk", type=int)
    p.add_argument("--token")
    p.add_argument("--api-key")
    p.add_argument("--url")
    p.add_argument("--pause-at", type=int)
    a = p.parse_args()
    headers = {}
    if a.token:
        headers["Upload-Token"] = a.token
    if a.api_key:
        headers["Authorization"] = f"Bearer {a.api_key}"
    c = client.TusClient(f"{a.endpoint}/v1/uploads", headers=headers)
    up = c.uploader(
        file_path=a.file,
        url=a.url,
        chunk_size=a.chunk,
        metadata={"bucket": a.bucket, "key": a.key, "filename": a.key.rsplit("/", 1)[-1]},
    )
    if not up.url:
        up.set_url(up.create_url())
        up.offset = 0
    print("url", up.url, flush=True)
    print("offset", up.offset, flush=True)
    stop = a.pause_at if a.pause_at is not None else up.get_file_size()
    while up.offset < stop:
        up.upload_chunk()
        print("offset", up.offset, flush=True)
    if a.pause_at is not None:
        print("paused", flush=True)
        while True:
            time.sleep(3600)  # waits to be killed: this is the client that disappears
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
