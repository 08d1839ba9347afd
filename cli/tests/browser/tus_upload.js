// A viewer's browser uploading straight to kura with tus-js-client and only a signed
// upload token (no API key), in headless Chromium. Run by cli/tests/browser_upload.rs:
//
//   node tus_upload.js GATEWAY_URL TOKEN KEY BYTES
//
// The page (and tus-js-client) is served by this script from its own loopback port, as
// an application's page would be from its own origin (the gateway must allow it by
// CORS); the file is BYTES pseudo-random bytes made in the page. Prints one JSON line:
// {"ok": true, "url": ..., "sha256": hex, "size": n} or {"ok": false, "error": ...}.
const fs = require("fs");
const http = require("http");
const path = require("path");
const { chromium } = require("playwright-core");

/// Serves the page and tus-js-client on 127.0.0.1; resolves to its origin.
function servePage() {
  const tusJs = fs.readFileSync(
    path.join(require.resolve("tus-js-client/package.json"), "..", "dist", "tus.min.js"),
  );
  const page = '<!doctype html><title>upload</title><script src="/tus.min.js"></script>';
  const server = http.createServer((req, res) => {
    if (req.url === "/tus.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(tusJs);
    } else {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(page);
    }
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, origin: `http://127.0.0.1:${server.address().port}` })),
  );
}

async function main() {
  const [gateway, token, key, bytes] = process.argv.slice(2);
  const { server, origin } = await servePage();
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  try {
    const page = await browser.newPage();
    await page.goto(`${origin}/`);
    const result = await page.evaluate(
      async ({ gateway, token, key, bytes }) => {
        const data = new Uint8Array(bytes);
        let x = 0x2545f491 >>> 0;
        for (let i = 0; i < data.length; i++) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          data[i] = x & 0xff;
        }
        const file = new Blob([data], { type: "video/mp4" });
        const url = await new Promise((resolve, reject) => {
          const upload = new tus.Upload(file, {
            endpoint: `${gateway}/v1/uploads`,
            headers: { "Upload-Token": token },
            metadata: { bucket: "browser", key, filetype: "video/mp4", filename: "clip.mp4" },
            chunkSize: 1024 * 1024,
            retryDelays: [0, 500, 1000],
            onError: (e) => reject(String(e)),
            onSuccess: () => resolve(upload.url),
          });
          upload.start();
        });
        const digest = await crypto.subtle.digest("SHA-256", data);
        const sha256 = Array.from(new Uint8Array(digest))
          .map((b) => b.toString(16).padStart(2, "0"))
          .join("");
        return { ok: true, url, sha256, size: data.length };
      },
      { gateway, token, key, bytes: Number(bytes) },
    );
    console.log(JSON.stringify(result));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e) }));
  } finally {
    await browser.close();
    server.close();
  }
}

main();
