// Drives a report in headless Chromium with playwright-core (for test_report_browser.py) and prints what it saw as
// JSON: which 3D views are live at load and after scrolling, and the table after sorting and filtering.
// usage: node report_interaction.js PLAYWRIGHT_CORE_DIR CHROMIUM URL FIRST SECOND
"use strict";
const [playwrightDir, executablePath, url, first, second] = process.argv.slice(2);
const { chromium } = require(playwrightDir);

(async () => {
  const browser = await chromium.launch({
    executablePath,
    args: ["--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  const started = Date.now();
  await page.goto(url);
  const loadMs = Date.now() - started;
  const live = () => page.evaluate(() => ({
    rendered: Array.from(document.querySelectorAll('.viewer[data-rendered="true"]'), (e) => e.dataset.structure),
    canvases: document.querySelectorAll(".viewer canvas").length,
  }));
  const atLoad = await live();
  const visit = async (k) => {
    await page.locator(`#p${k} .viewer`).scrollIntoViewIfNeeded();
    await page.waitForSelector(`#p${k} .viewer[data-rendered="true"]`, { timeout: 30000 });
    await page.waitForTimeout(300); // let the observer release the views that left the screen
    return await live();
  };
  const afterFirst = await visit(first);
  const afterSecond = await visit(second);

  const ids = () => page.$$eval("#summary tbody tr:not([hidden])", (rows) => rows.map((r) => r.cells[1].textContent));
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.click("#summary th:nth-child(4)"); // mean pLDDT
  const ascending = await ids();
  await page.click("#summary th:nth-child(4)");
  const descending = await ids();
  await page.check("#failed-only");
  const failedOnly = await ids();
  await browser.close();
  console.log(JSON.stringify({ loadMs, atLoad, afterFirst, afterSecond, ascending, descending, failedOnly, errors }));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
