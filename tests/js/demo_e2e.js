// Two users chatting through the /demo page, each in a browser context of its own in headless
// Chromium (puppeteer-core, Debian's /usr/bin/chromium); driven by tests/integration/test_demo.py.
//
// Usage: node demo_e2e.js '<json options>'
//   options: { chatUrl, pageSize?, timeoutMs?, screenshot? (a PNG path: Ada's page at the end) }
// Ada (9001) and Ben (9002) open /demo?user=...; every step works the page as a person would
// (typing, Enter, clicking) and waits for what the other side must show. Prints one JSON
// object { steps: [names of the steps passed], resumes, downloaded, ... } and exits 0, or
// { error, step, steps } and exits 1.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { withOfflineChromium } = require('./chromium');

const options = JSON.parse(process.argv[2]);
const TIMEOUT = options.timeoutMs || 20000;
// A 1x1 PNG, the file Ben sends.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==', 'base64');
const ADA = 9001;
const BEN = 9002;
const DM = 'r-9212';       // Ada and Ben's room (app/demo/world.py)
const DM_CLEO = 'r-9213';  // Ada and Cleo's room
const CHANNEL = 'c-9101';

const result = { steps: [] };
const pages = {};
let step = 'start';

async function open(browser, user) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width: 1100, height: 640 });
  page.on('pageerror', (error) => { result.pageErrors = [...(result.pageErrors || []), String(error)]; });
  pages[user] = page;
  await page.goto(`${options.chatUrl}/demo?user=${user}&page=${options.pageSize || 5}`);
  await page.waitForSelector('#status[data-state="connected"]', { timeout: TIMEOUT });
  return page;
}

function until(page, fn, ...args) {
  return page.waitForFunction(fn, { timeout: TIMEOUT }, ...args);
}

const texts = () => [...document.querySelectorAll('#messages li .text')].map((node) => node.textContent);

function shows(page, text) {
  return until(page, (t) => [...document.querySelectorAll('#messages li .text')].some((n) => n.textContent === t), text);
}

function gone(page, text) {
  return until(page, (t) => ![...document.querySelectorAll('#messages li .text')].some((n) => n.textContent === t), text);
}

async function say(page, text) {
  await page.type('#text', text);
  await page.keyboard.press('Enter');
}

function act(page, text, action) {
  return page.evaluate((t, a) => {
    const item = [...document.querySelectorAll('#messages li')].find((li) => li.querySelector('.text') &&
      li.querySelector('.text').textContent === t);
    item.querySelector(`[data-action="${a}"]`).click();
  }, text, action);
}

// Clicked from inside the page: the lists are re-rendered whenever counts or presence change,
// so a node found beforehand may be gone by the time a synthetic mouse reaches it.
function click(page, selector) {
  return page.$eval(selector, (node) => node.click());
}

async function enter(page, room) {
  await click(page, `#rooms li[data-room="${room}"]`);
  await until(page, (r) => window.demo.joined === r, room);
}

function online(page, user, value) {
  return until(page, (u, v) => {
    const item = document.querySelector(`#people li[data-user="${u}"]`);
    return item && item.dataset.online === v;
  }, user, String(value));
}

async function run(browser) {
  step = 'open both pages';
  const ada = await open(browser, ADA);
  const ben = await open(browser, BEN);
  step = 'Ada sees Ben online';
  await online(ada, BEN, true);
  result.steps.push('online');

  step = 'community channel';
  await enter(ada, CHANNEL);
  await enter(ben, CHANNEL);
  await say(ada, 'hello channel');
  await shows(ben, 'hello channel');
  result.steps.push('channel');

  step = 'resume after a disconnect';
  await ada.click('#drop');
  await ada.waitForSelector('#status[data-state="offline"]', { timeout: TIMEOUT });
  await online(ben, ADA, false);
  await say(ben, 'while you were away');
  await shows(ben, 'while you were away');
  await ada.click('#drop');  // now "Reconnect"
  await shows(ada, 'while you were away');
  result.resumes = await ada.evaluate(() => window.demo.resumes);
  await online(ben, ADA, true);
  result.steps.push('resume');

  step = 'history paging';
  await enter(ada, DM);
  await enter(ben, DM);
  for (let i = 1; i <= 7; i += 1) await say(ben, `m${i}`);
  await shows(ada, 'm7');
  await enter(ada, DM_CLEO);
  await enter(ada, DM);  // reopening loads the newest page only
  await shows(ada, 'm7');
  result.firstPage = await ada.evaluate(texts);
  await until(ada, () => !document.querySelector('#older').hidden);
  await ada.click('#older');
  await shows(ada, 'm1');
  await until(ada, () => document.querySelector('#older').hidden);
  result.afterOlder = await ada.evaluate(texts);
  result.steps.push('paging');

  step = 'typing and sending';
  await ada.type('#text', 'hello Ben');
  await until(ben, () => document.querySelector('#typing').textContent.includes('Ada is typing'));
  await ada.keyboard.press('Enter');
  await shows(ben, 'hello Ben');
  result.steps.push('typing', 'send');

  step = 'reply';
  await act(ben, 'hello Ben', 'reply');
  await say(ben, 'hi Ada');
  await until(ada, () => [...document.querySelectorAll('#messages li')].some((li) =>
    li.querySelector('.text').textContent === 'hi Ada' && li.querySelector('.parent') &&
    li.querySelector('.parent').textContent === 'Ada: hello Ben'));
  result.steps.push('reply');

  step = 'edit';
  await act(ada, 'hello Ben', 'edit');
  await ada.$eval('#text', (node) => { node.value = ''; });
  await say(ada, 'hello Ben, edited');
  await until(ben, () => [...document.querySelectorAll('#messages li')].some((li) =>
    li.querySelector('.text').textContent === 'hello Ben, edited' && li.querySelector('.edited')));
  result.steps.push('edit');

  step = 'delete';
  await say(ada, 'oops');
  await shows(ben, 'oops');
  await act(ada, 'oops', 'delete');
  await gone(ben, 'oops');
  await gone(ada, 'oops');
  result.steps.push('delete');

  step = 'file upload and download';
  const file = path.join(os.tmpdir(), `smooth-demo-${process.pid}.png`);
  fs.writeFileSync(file, PNG);
  const input = await ben.$('#file');
  await input.uploadFile(file);
  await ada.waitForSelector('#messages li a.download', { timeout: TIMEOUT });
  await click(ada, '#messages li a.download');
  await until(ada, () => document.querySelector('#messages li[data-downloaded]'));
  result.downloaded = await ada.$eval('#messages li[data-downloaded]', (li) => li.dataset.downloaded);
  result.uploadedBytes = PNG.length;
  fs.rmSync(file, { force: true });
  result.steps.push('upload', 'download');

  step = 'unread counts';
  await enter(ada, DM_CLEO);
  await say(ben, 'are you there?');
  await until(ada, (r) => Number(document.querySelector(`#rooms li[data-room="${r}"] .unread`).dataset.count) >= 1, DM);
  result.unread = await ada.$eval(`#rooms li[data-room="${DM}"] .unread`, (node) => Number(node.dataset.count));
  await enter(ada, DM);
  await shows(ada, 'are you there?');
  await until(ada, (r) => document.querySelector(`#rooms li[data-room="${r}"] .unread`).dataset.count === '0', DM);
  result.steps.push('unread');

  step = 'voice channel';
  await ben.click('#join-voice');
  await until(ada, (u) => document.querySelector(`#voice-members li[data-user="${u}"]`), BEN);
  result.steps.push('voice');

  if (options.screenshot) await ada.screenshot({ path: options.screenshot });
  result.pageErrors = result.pageErrors || [];
  result.errorsShown = await ada.$eval('#errors', (n) => n.textContent) + await ben.$eval('#errors', (n) => n.textContent);
}

async function main() {
  return withOfflineChromium(async (browser) => {
    try {
      await run(browser);
      process.stdout.write(JSON.stringify(result) + '\n');
      return 0;
    } catch (error) {  // reported while the pages are still open
      result.seen = {};
      for (const [user, page] of Object.entries(pages)) {  // what each page showed, for the failure report
        result.seen[user] = await page.evaluate(() => ({
          status: document.querySelector('#status').textContent, errors: document.querySelector('#errors').textContent,
          typing: document.querySelector('#typing').textContent, room: window.demo.current && window.demo.current.key,
          messages: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
        })).catch((e) => String(e));
      }
      process.stdout.write(JSON.stringify({ ...result, error: String(error), step }) + '\n');
      return 1;
    }
  });
}

main().then((code) => process.exit(code));
