// Debian's Chromium for the browser tests (puppeteer-core's own download does not work here):
// headless, a throwaway profile, and no host name resolved but 127.0.0.1, so nothing a page
// loads can come from the Internet.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const puppeteer = require('puppeteer-core');

const CHROMIUM = '/usr/bin/chromium';

// Runs `use(browser)` and returns what it returns; the browser and its profile are gone after.
async function withOfflineChromium(use) {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'smooth-chromium-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
           '--disable-sync', '--no-first-run', '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1'],
  });
  try {
    return await use(browser);
  } finally {
    await browser.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

module.exports = { withOfflineChromium };
