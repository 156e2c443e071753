// Opens ftail's exports in headless Chromium (Debian's package) through
// playwright-core, the way a person would, and reports what the page
// showed as JSON on standard output.
//
//   browser.mjs speedscope INDEX_HTML PROFILE SHOT.png
//     speedscope's offline app loads PROFILE (as its own command line
//     tool does: #localProfilePath=); prints the page's title, the text of
//     its sandwich view (every function, as a table), errors, and how
//     many colours the time-ordered view's screenshot holds.
//   browser.mjs svg FILE.svg SHOT.png CLICK SEARCH
//     opens the flame graph, lists its frames, clicks the first frame of
//     function CLICK (zoom), then searches for SEARCH (the page's prompt
//     answered); prints frames, zoom and search results, errors.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'

// playwright-core lives in the test cache (FTAIL_NODE_MODULES), not next
// to this file.
const require = createRequire(path.join(process.env.FTAIL_NODE_MODULES || '.', 'x.js'))
const { chromium } = require('playwright-core')

const chromiumPath = process.env.FTAIL_CHROMIUM || '/usr/bin/chromium'

async function launch() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ftail-chromium-'))
  // A fresh profile (user data directory) for every run.
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    viewport: { width: 1280, height: 800 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      '--allow-file-access-from-files',
      '--enable-unsafe-swiftshader',
    ],
  })
  const page = browser.pages()[0] ?? (await browser.newPage())
  const errors = []
  page.on('pageerror', e => errors.push(`pageerror: ${e.message}`))
  page.on('console', m => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`)
  })
  return { browser, page, errors, profile }
}

// Distinct colours in a screenshot (decoded by the browser itself).
async function colours(page, png) {
  const url = 'data:image/png;base64,' + png.toString('base64')
  return await page.evaluate(async url => {
    const bmp = await createImageBitmap(await (await fetch(url)).blob())
    const c = new OffscreenCanvas(bmp.width, bmp.height)
    const g = c.getContext('2d')
    g.drawImage(bmp, 0, 0)
    const d = g.getImageData(0, 0, bmp.width, bmp.height).data
    const seen = new Set()
    for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2])
    return seen.size
  }, url)
}

async function speedscope(index, profile, shot) {
  const { browser, page, errors, profile: dir } = await launch()
  try {
    const data = fs.readFileSync(profile).toString('base64')
    const loader = path.join(dir, 'profile.js')
    fs.writeFileSync(
      loader,
      `speedscope.loadFileFromBase64(${JSON.stringify(path.basename(profile))}, ${JSON.stringify(data)})`,
    )
    await page.goto(`file://${path.resolve(index)}#localProfilePath=${loader}`)
    // Loaded: the title names the file.
    await page.waitForFunction(() => document.title.includes(' - speedscope'), null, {
      timeout: 30000,
    })
    // The timeline is drawn on a canvas a moment later: screenshots until
    // it shows (or 10 s have passed).
    let timeOrdered = 0
    for (let i = 0; i < 20 && timeOrdered <= 20; i++) {
      await page.waitForTimeout(500)
      timeOrdered = await colours(page, await page.screenshot({ path: shot }))
    }
    // The sandwich view: every function in a table, as text.
    await page.getByText('Sandwich').click()
    await page.waitForFunction(() => document.body.innerText.includes('Symbol Name'), null, {
      timeout: 30000,
    })
    await page.screenshot({ path: shot.replace(/\.png$/, '-sandwich.png') })
    const text = await page.evaluate(() => document.body.innerText)
    return { title: await page.title(), text, colours: timeOrdered, errors }
  } finally {
    await browser.close()
  }
}

async function svg(file, shot, click, search) {
  const { browser, page, errors } = await launch()
  try {
    await page.goto(`file://${path.resolve(file)}`)
    await page.waitForLoadState('load')
    const frames = await page.evaluate(() =>
      [...document.querySelectorAll('g > title')].map(t => t.textContent),
    )
    const png = await page.screenshot({ path: shot })
    const colours0 = await colours(page, png)
    // Click the first frame of CLICK: the graph zooms into it.
    const target = page.locator('g', { has: page.locator(`title:text-matches("^${click} \\\\(")`) }).first()
    await target.click()
    const zoomed = await page
      .waitForFunction(() => {
        const u = document.getElementById('unzoom')
        return !!u && !u.classList.contains('hide')
      }, null, { timeout: 10000 })
      .then(() => true, () => false)
    await page.screenshot({ path: shot.replace(/\.png$/, '-zoomed.png') })
    // Search: the page asks for a pattern in a prompt.
    page.once('dialog', d => d.accept(search))
    await page.locator('#search').click()
    await page
      .waitForFunction(() => document.getElementById('matched')?.textContent.includes('Matched'), null, {
        timeout: 10000,
      })
      .catch(() => {})
    const matched = await page.evaluate(() => document.getElementById('matched')?.textContent ?? '')
    await page.screenshot({ path: shot.replace(/\.png$/, '-search.png') })
    return { frames, colours: colours0, zoomed, matched, errors }
  } finally {
    await browser.close()
  }
}

const [mode, ...args] = process.argv.slice(2)
const result = mode === 'speedscope' ? await speedscope(...args) : await svg(...args)
console.log(JSON.stringify(result))
