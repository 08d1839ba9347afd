// The web console in headless Chromium against a real `kura dev`, as a person would use
// it. Run by cli/tests/console_browser.rs:
//
//   node console.js GATEWAY_URL API_KEY ADMIN_TOKEN VIDEO_FILE SCREENSHOT_DIR NEW_NODE_ADDR
//
// Steps: a wrong key shows the sign-in error; sign in; the cluster page shows three
// healthy nodes; a real video is uploaded (tus) with a transcode; its job is watched to
// `succeeded`; its page plays it (the video's time advances) and the rendition picker
// switches resolution; an object is deleted; a fourth node (started by the test, not yet
// in the map) is added and then drained, the rebalance watched until it settles each time. A page that needs the admin token says so when signed in without it.
// Every page is screenshotted. Fails on any console error, page error, failed request or
// HTTP error response, except the 401s the wrong-key step provokes.
// Prints one JSON line: {"ok": true, "steps": [...]} or {"ok": false, "error": ..., "steps": [...]}.
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

/// Longest wait for one step (a transcode of a few seconds of video on two cores).
const STEP_MS = 240000;

async function main() {
  const [gateway, apiKey, adminToken, video, shots, newNode] = process.argv.slice(2);
  fs.mkdirSync(shots, { recursive: true });
  const steps = [];
  const problems = [];
  let phase = "start";
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"],
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  const expected401 = () => phase === "wrong-key" || phase === "refused";
  // While the test itself cuts the network, requests fail and Chromium says so.
  const offline = () => phase === "network-break";
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    if (expected401() && /status of 40[19]/.test(m.text())) return;
    if (offline() && /ERR_INTERNET_DISCONNECTED/.test(m.text())) return;
    problems.push(`console error (${phase}): ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error (${phase}): ${e.message}`));
  page.on("requestfailed", (r) => {
    // A request the page itself abandoned (hls.js cancelling a segment on a level switch,
    // leaving the player's page) is not a failure of kura.
    const why = r.failure() ? r.failure().errorText : "";
    if (why === "net::ERR_ABORTED") return;
    if (offline() && why === "net::ERR_INTERNET_DISCONNECTED") return;
    problems.push(`request failed (${phase}): ${r.method()} ${r.url()} ${why}`);
  });
  page.on("response", (r) => {
    if (r.status() < 400) return;
    if (expected401() && (r.status() === 401 || (phase === "refused" && r.status() === 409))) return;
    problems.push(`HTTP ${r.status()} (${phase}): ${r.request().method()} ${r.url()}`);
  });
  const step = async (name, fn) => {
    phase = name;
    const t0 = Date.now();
    await fn();
    await page.screenshot({ path: path.join(shots, `${String(steps.length + 1).padStart(2, "0")}-${name}.png`), fullPage: true });
    steps.push({ step: name, ms: Date.now() - t0 });
    if (problems.length) throw new Error(problems.join("\n"));
  };
  const confirm = async () => page.locator("dialog.confirm button[value=yes]").click();
  try {
    await step("wrong-key", async () => {
      await page.goto(`${gateway}/console/`);
      await page.fill("#api-key", "not-the-key");
      await page.click("#signin-button");
      await page.waitForSelector("#signin-error:not([hidden])");
      const text = await page.textContent("#signin-error");
      if (!/refused/.test(text)) throw new Error(`sign-in error says: ${text}`);
    });
    await step("key-only", async () => {
      await page.fill("#api-key", apiKey);
      await page.click("#signin-button");
      await page.waitForSelector("#bucket-list");
      await page.goto(`${gateway}/console/#/cluster`);
      await page.waitForSelector("text=This page needs the admin token");
      await page.click("#signout");
      await page.waitForSelector("#signin-button");
    });
    await step("sign-in", async () => {
      await page.fill("#api-key", apiKey);
      await page.fill("#admin-token", adminToken);
      await page.click("#signin-button");
      await page.waitForSelector("#bucket-list");
      if (page.url().includes(apiKey) || page.url().includes(adminToken)) throw new Error("the URL holds a credential");
      const stored = await page.evaluate(() => JSON.stringify(localStorage));
      if (stored.includes(apiKey) || stored.includes(adminToken)) throw new Error("a credential is in localStorage");
    });
    await step("cluster", async () => {
      await page.click("nav#nav a[data-page=cluster]");
      await page.waitForFunction(() => {
        const rows = document.querySelectorAll("#nodes tbody tr");
        return rows.length === 3 && [...rows].every((r) => r.querySelector(".health.up"));
      });
      // Charts once the gateway has a sample (every 10 s), else a note saying so.
      await page.waitForFunction(() => {
        const t = document.getElementById("traffic");
        return t && (t.querySelector("svg.chart") || /No samples yet/.test(t.textContent));
      });
    });
    await step("upload", async () => {
      await page.goto(`${gateway}/console/#/b/console/clips/`);
      await page.waitForSelector("#drop-zone");
      await page.selectOption("#transcode", "preview");
      await page.setInputFiles("#file-input", video);
      await page.waitForSelector("#uploads li.done");
      await page.selectOption("#transcode", "");
      await page.setInputFiles("#file-input", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("delete me") });
      await page.waitForSelector("#uploads li.done >> nth=1");
      await page.waitForSelector(`tr[data-key="clips/notes.txt"]`);
      await page.waitForSelector(`tr[data-key="clips/${path.basename(video)}"]`);
    });
    await step("network-break", async () => {
      // 24 MiB at 4 MiB/s (Chromium's network emulation), paused and resumed, then the
      // network cut while it runs: tus-js-client retries from the durable offset.
      const cdp = await context.newCDPSession(page);
      const net = (offline, up) => cdp.send("Network.emulateNetworkConditions",
        { offline, latency: 0, downloadThroughput: -1, uploadThroughput: up });
      await cdp.send("Network.enable");
      const body = Buffer.alloc(24 << 20);
      for (let i = 0; i < body.length; i += 4) body.writeUInt32LE((i * 2654435761) >>> 0, i);
      await net(false, 4 << 20);
      await page.setInputFiles("#file-input", { name: "big.bin", mimeType: "application/octet-stream", buffer: body });
      const row = '#uploads li[data-upload="clips/big.bin"]';
      await page.waitForFunction((r) => /MiB of/.test(document.querySelector(r).textContent), row);
      await page.click(`${row} button[data-action=pause]`);
      await page.waitForFunction((r) => /paused/.test(document.querySelector(r).textContent), row);
      await net(true, 4 << 20);
      await page.click(`${row} button[data-action=pause]`); // Resume, into a dead network
      await page.waitForFunction((r) => /retrying/.test(document.querySelector(r).textContent), row);
      await net(false, -1);
      await page.waitForSelector(`${row}.done`);
      const digest = await page.evaluate(async ({ key }) => {
        const r = await fetch("/v1/o/console/clips/big.bin", { headers: { Authorization: `Bearer ${key}` } });
        const b = new Uint8Array(await crypto.subtle.digest("SHA-256", await r.arrayBuffer()));
        return Array.from(b).map((x) => x.toString(16).padStart(2, "0")).join("");
      }, { key: apiKey });
      const want = require("crypto").createHash("sha256").update(body).digest("hex");
      if (digest !== want) throw new Error("the resumed upload differs from the file");
    });
    await step("signed-url", async () => {
      // "Copy URL" puts a signed URL on the clipboard; it opens the object with no key.
      await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: gateway });
      await page.click(`tr[data-key="clips/notes.txt"] button[data-action=sign]`);
      await page.waitForFunction(async () => /\/v1\/s\//.test(await navigator.clipboard.readText()));
      const url = await page.evaluate(() => navigator.clipboard.readText());
      const r = await fetch(url);
      const text = await r.text();
      if (r.status !== 200 || text !== "delete me") throw new Error(`signed URL gave ${r.status}: ${text}`);
    });
    await step("delete", async () => {
      await page.click(`tr[data-key="clips/notes.txt"] button[data-action=delete]`);
      await confirm();
      await page.waitForSelector(`tr[data-key="clips/notes.txt"]`, { state: "detached" });
    });
    await step("jobs", async () => {
      await page.click("nav#nav a[data-page=jobs]");
      await page.waitForSelector(`#jobs tr[data-state=succeeded]`);
      const failed = await page.$$("#jobs tr[data-state=failed]");
      if (failed.length) throw new Error("a job failed");
    });
    await step("batch", async () => {
      // A batch for a prefix holding one video (uploaded here without a transcode).
      await page.goto(`${gateway}/console/#/b/console/batch/`);
      await page.waitForSelector("#drop-zone");
      await page.setInputFiles("#file-input", video);
      await page.waitForSelector("#uploads li.done");
      await page.goto(`${gateway}/console/#/jobs`);
      await page.fill("#submit-job input[name=source]", "console/batch/");
      await page.selectOption("#submit-job select[name=profile]", "preview");
      await page.click("#submit-job button[type=submit]");
      await page.waitForSelector("#batch");
      await page.waitForFunction(() => /1 succeeded/.test(document.getElementById("batch").textContent));
    });
    await step("job", async () => {
      await page.goto(`${gateway}/console/#/jobs`);
      await page.click("#jobs tr[data-state=succeeded] a");
      await page.waitForSelector("#tasks tbody tr");
    });
    await step("player", async () => {
      await page.goto(`${gateway}/console/#/o/console/clips/${path.basename(video)}`);
      await page.waitForSelector("#object-meta");
      await page.click("#chunks summary");
      // Every copy of every chunk is where the map puts it: three held copies each.
      await page.waitForFunction(() => {
        const rows = document.querySelectorAll("#chunks tbody tr");
        return rows.length > 0 && [...rows].every((r) => r.querySelectorAll(".copy.held").length === 3);
      });
      await page.waitForSelector("#player");
      await page.waitForFunction(() => document.querySelectorAll("#rendition option").length >= 3);
      await page.evaluate(() => document.getElementById("player").play());
      await page.waitForFunction(() => document.getElementById("player").currentTime > 1.0);
      const heights = await page.$$eval("#rendition option", (os) => os.slice(1).map((o) => o.textContent));
      for (const index of [0, 1]) {
        await page.selectOption("#rendition", String(index));
        const want = parseInt(heights[index], 10);
        await page.waitForFunction((h) => document.getElementById("player").dataset.height === String(h), want);
      }
      // Hovering the strip's last tile previews it.
      const strip = page.locator("#thumbs");
      const box = await strip.boundingBox();
      await strip.hover({ position: { x: box.width - 2, y: box.height / 2 } });
      await page.waitForSelector("#thumb-preview:not([hidden])[data-tile='9']");
      const t = await page.evaluate(() => document.getElementById("player").currentTime);
      await page.waitForFunction((t0) => document.getElementById("player").currentTime > t0 + 0.5, t);
    });
    await step("add-node", async () => {
      await page.goto(`${gateway}/console/#/cluster`);
      await page.fill("#add-node input[name=id]", "dev-4");
      await page.fill("#add-node input[name=addr]", newNode);
      await page.fill("#add-node input[name=zone]", "zone-4");
      await page.click("#add-node button[type=submit]");
      await confirm();
      await page.waitForSelector('#nodes tr[data-node="dev-4"] .health.up');
      await page.waitForSelector("#rebalance .ok");
    });
    await step("refused", async () => {
      // The same node again: the API refuses (409) and the page shows why.
      await page.click("#add-node button[type=submit]");
      await confirm();
      await page.waitForSelector("#cluster-action-error .error");
      const text = await page.textContent("#cluster-action-error");
      if (!/already in the map/.test(text)) throw new Error(`refusal shown as: ${text}`);
    });
    await step("drain", async () => {
      const row = '#nodes tr[data-node="dev-4"]';
      await page.click(`${row} button[data-action=drain]`);
      await confirm();
      await page.waitForSelector(`${row} .state.draining`);
      await page.waitForSelector("#rebalance .ok");
    });
    await step("traffic", async () => {
      // The gateway samples its traffic every 10 s: by now (or soon) there is a sample
      // of the requests this run made.
      await page.goto(`${gateway}/console/#/cluster`);
      await page.waitForSelector("#traffic svg.chart path.line");
    });
    await step("phone", async () => {
      await page.setViewportSize({ width: 390, height: 844 });
      await page.goto(`${gateway}/console/#/b/console/clips/`);
      await page.waitForSelector(`tr[data-key="clips/${path.basename(video)}"]`);
    });
    console.log(JSON.stringify({ ok: true, steps }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), steps, problems }));
  } finally {
    await browser.close();
  }
}

main();
