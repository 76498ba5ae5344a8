// The dashboard page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser download). Driven by tests/tests/dashboard.rs:
//
//   node dashboard.mjs --shots DIR URL...
//
// opens one page per URL, then reads steps from stdin, one JSON object per line:
//   {"name": "...", "feeds": ["<flow's feed on page 1>", ...] (optional: the one shown),
//    "keys": ["<key on page 1>", ...], "window": "start:end",
//    "status": "fired"|"corrected"|"retracted", "revision": N, "values": {"clicks": "3"}}
// and, for every page, chooses that flow and key, waits until the key's windows table
// shows that window with that status, revision and values, its charts are drawn and the
// job's progress is shown (a correction or a retraction also listed as such among the
// live changes); with "leader": "V", the key's row among the top keys shows V (its
// newest window's value of the aggregate they are ranked by); with "shot": NAME it then takes a screenshot of every page
// (DIR/NAME-<i>.png); then answers {"ok": true, "step": name} on stdout. {"done": true} takes a
// full-page screenshot of every page (DIR/dashboard-<i>.png) and exits 0. Any failure
// prints {"ok": false, ...} with what the page showed, saves a screenshot, exits 1.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { mkdirSync } from "node:fs";

const args = process.argv.slice(2);
let shots = ".";
const urls = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--shots") shots = args[++i];
  else urls.push(args[i]);
}
mkdirSync(shots, { recursive: true });

const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const STEP_TIMEOUT = 20000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
  ],
});
const errors = [];
const pages = [];
for (const url of urls) {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  page.on("pageerror", (e) => errors.push(`${url}: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") errors.push(`${url}: console: ${m.text()}`); });
  await page.goto(url, { waitUntil: "load" });
  pages.push(page);
}

async function fail(step, why, page) {
  let shown = "";
  try {
    shown = await page.evaluate(() => ({
      conn: document.body.dataset.conn,
      key: document.querySelector("#key")?.value,
      keys: [...document.querySelectorAll("#key option")].map((o) => o.value),
      rows: [...document.querySelectorAll("#windows tbody tr")].map((tr) => `${tr.dataset.window} ${tr.dataset.status} r${tr.dataset.revision} | ${tr.textContent}`),
      jobs: document.querySelector("#jobs")?.textContent,
    }));
    await page.screenshot({ path: `${shots}/dashboard-failure.png`, fullPage: true });
  } catch (e) { shown = String(e); }
  say({ ok: false, step, error: why, shown, errors });
  await browser.close();
  process.exit(1);
}

async function check(step) {
  for (let i = 0; i < pages.length; i++) {
    const page = pages[i];
    const key = step.keys[i];
    const feed = step.feeds && step.feeds[i];
    if (feed) {
      // Choose the flow, once it is offered.
      try {
        await page.waitForFunction((f) => [...document.querySelectorAll("#feed option")].some((o) => o.value === f), feed, { timeout: STEP_TIMEOUT });
      } catch (e) { await fail(step.name, `flow ${feed} is not offered on ${urls[i]}`, page); }
      if (await page.$eval("#feed", (s) => s.value) !== feed) await page.selectOption("#feed", feed);
    }
    // Choose the key ("one key"), once it is offered.
    try {
      await page.waitForFunction((k) => [...document.querySelectorAll("#key option")].some((o) => o.value === k), key, { timeout: STEP_TIMEOUT });
    } catch (e) { await fail(step.name, `key ${key} is not offered on ${urls[i]}`, page); }
    if (await page.$eval("#key", (s) => s.value) !== key || !(await page.$eval("input[name=mode][value=one]", (r) => r.checked))) {
      await page.selectOption("#key", key);
    }
    try {
      await page.waitForFunction(({ window, status, revision, values }) => {
        const tr = document.querySelector(`#windows tbody tr[data-window="${window}"]`);
        if (!tr || tr.dataset.status !== status || tr.dataset.revision !== String(revision)) return false;
        const heads = [...document.querySelectorAll("#windows-head th")].map((t) => t.textContent);
        const cells = [...tr.children].map((t) => t.textContent);
        for (const [name, v] of Object.entries(values || {})) {
          if (cells[heads.indexOf(name)] !== v) return false;
        }
        // Charts drawn, progress shown, connected.
        return document.querySelectorAll(".chart canvas").length > 0
          && document.querySelector("#jobs .job") !== null
          && document.body.dataset.conn === "live";
      }, step, { timeout: STEP_TIMEOUT });
    } catch (e) {
      await fail(step.name, `${urls[i]} does not show ${step.window} ${step.status} revision ${step.revision} ${JSON.stringify(step.values || {})}`, page);
    }
    if (step.status === "corrected" || step.status === "retracted") {
      // The correction (retraction) is listed as such among the live changes.
      const listed = await page.$$eval(`#changes li[data-status=${step.status}]`, (l) => l.length);
      if (listed === 0) await fail(step.name, `the ${step.status} window is not in the live changes`, page);
    }
  }
  if (step.leader !== undefined) {
    for (let i = 0; i < pages.length; i++) {
      const key = step.keys[i];
      try {
        await pages[i].waitForFunction(({ key, v }) => {
          const tr = [...document.querySelectorAll("#leaders tbody tr")].find((t) => t.dataset.key === key);
          return tr && tr.children[1].textContent === v;
        }, { key, v: step.leader }, { timeout: STEP_TIMEOUT });
      } catch (e) { await fail(step.name, `the top keys do not show ${key} with ${step.leader}`, pages[i]); }
    }
  }
  if (step.shot) {
    for (let i = 0; i < pages.length; i++) {
      await pages[i].waitForTimeout(1800);
      await pages[i].screenshot({ path: `${shots}/${step.shot}-${i}.png`, fullPage: true });
    }
  }
  say({ ok: true, step: step.name });
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const step = JSON.parse(line);
  if (step.done) {
    for (let i = 0; i < pages.length; i++) {
      // Let the row flash settle, so the picture is what one sees at rest.
      await pages[i].waitForTimeout(1800);
      await pages[i].screenshot({ path: `${shots}/dashboard-${i}.png`, fullPage: true });
    }
    const real = errors.filter((e) => !e.includes("EventSource") && !e.includes("ERR_"));
    say({ ok: real.length === 0, step: "done", errors: real });
    await browser.close();
    process.exit(real.length === 0 ? 0 : 1);
  }
  await check(step);
}
await browser.close();
