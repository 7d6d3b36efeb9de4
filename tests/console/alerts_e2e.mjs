// SPDX-License-Identifier: Apache-2.0
// The alert pages (console_e2e.mjs runs this with its browser helpers): create a channel
// to a local receiver (a bad URL refused at the field first) and send it a test, a rule (an
// escalation step without a channel refused at the step), a heartbeat monitor (its ping URL
// shown once) and a silence through the forms, see them listed; a failed run raises an alert
// that is acknowledged with a comment and notified to the receiver (a coordinator without the
// alert engine: the alert and delivery test_console.py seeded); every tab in Chinese light and
// English dark (screenshots, accessibility audit); a viewer sees no write control on any tab.
import { createServer } from 'node:http'

export async function alertPages({ base, newPage, login, shot, audit, step, adminPassword, viewerPassword }) {
  const TABS = ['alerts', 'rules', 'channels', 'silences', 'monitors', 'deliveries']
  const started = Date.now()
  // The channel's receiver: answers 200 and keeps what it got.
  const received = []
  const receiver = createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      received.push({ headers: req.headers, body })
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.end('ok')
    })
  })
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  const hookUrl = `http://127.0.0.1:${receiver.address().port}/hooks/quartzflow`
  try {
    const page = await newPage('light', 'zh-CN')
    await login(page, 'admin', adminPassword)
    const paths = await page.evaluate(async () => Object.keys((await (await fetch('/api/v1/openapi.json')).json()).paths))
    const engine = paths.includes('/api/v1/ping/{token}') && paths.includes('/api/v1/channels/{id}/test')
    const rowOf = (table, text) =>
      page.locator(`[data-testid=${table}] .el-table__body-wrapper .el-table__row`, { hasText: text })
    const pick = async (select, option) => {
      await page.locator(select).click()
      await page.locator('.el-select-dropdown__item:visible', { hasText: option }).first().click()
    }

    // The navigation's entry, then a channel: a bad URL is refused at the field.
    await page.click('[data-nav="/alerts"]')
    await page.waitForSelector('[data-testid=alerts-table]')
    await page.click('#tab-channels')
    await page.click('[data-testid=channel-new]')
    await page.fill('input[name=channel-id]', 'e2e-hook')
    await page.fill('input[name=channel-url]', 'ftp://hooks.example.com/qf')
    await page.fill('input[name=channel-secret]', 'e2e-signing-key-42')
    await page.click('[data-testid=channel-submit]')
    const urlError = (await page.locator('[data-testid=channel-dialog] .el-form-item__error').first().textContent()).trim()
    if (!/scheme/.test(urlError)) throw new Error(`the channel's URL error is "${urlError}"`)
    await page.fill('input[name=channel-url]', hookUrl)
    await page.click('[data-testid=channel-submit]')
    await rowOf('channels-table', 'e2e-hook').waitFor()
    const hint = (await rowOf('channels-table', 'e2e-hook').locator('[data-testid=channel-secret-hint]').textContent()).trim()
    if (!hint.endsWith('42') || hint.includes('e2e-signing')) throw new Error(`the channel's secret shows as "${hint}"`)
    step(`channel created (a bad URL refused at the field: "${urlError}"); its secret listed as "${hint}"`)
    // Editing shows the stored secret as its hint only.
    await rowOf('channels-table', 'e2e-hook').locator('[data-testid=channel-edit]').click()
    if ((await page.inputValue('input[name=channel-secret]')) !== '') throw new Error('the edit form holds the secret')
    await page.waitForSelector('[data-testid=channel-dialog] [data-testid=secret-hint]')
    await shot(page, 'alerts-channel-dialog-zh-light')
    await page.locator('[data-testid=channel-dialog] .el-dialog__headerbtn').click()
    if (engine) {
      // Send test: the receiver gets a signed TEST notification, the page says it was delivered.
      await rowOf('channels-table', 'e2e-hook').locator('[data-testid=channel-test]').click()
      await page.waitForSelector('[data-testid=channel-test-result]')
      const result = (await page.textContent('[data-testid=channel-test-result]')).trim()
      const test = received.find((r) => r.body.includes('NOTIFICATION_KIND_TEST'))
      if (!/已送达/.test(result) || !/HTTP 200/.test(result)) throw new Error(`the test's result reads "${result}"`)
      if (!test || !/^sha256=[0-9a-f]{64}$/.test(test.headers['x-quartzflow-signature'] ?? ''))
        throw new Error(`the receiver got no signed test: ${JSON.stringify(received.map((r) => r.headers))}`)
      step(`channel test: "${result}"; the receiver got a signed TEST notification`)
      await shot(page, 'alerts-channels-test-zh-light')
    } else if (await page.locator('[data-testid=channel-test]').count()) {
      throw new Error('Send test is offered by a coordinator without POST /channels/{id}/test')
    }

    // A rule: failures of console-fail to e2e-hook (grouped for 1 s only), an escalation step
    // refused until it has a channel; a condition's own field only for that condition.
    await page.click('#tab-rules')
    await page.click('[data-testid=rule-new]')
    await page.fill('input[name=rule-id]', 'e2e-failed')
    await pick('[data-testid=rule-condition]', '连续失败')
    await page.waitForSelector('input[name=rule-consecutive]')
    await pick('[data-testid=rule-condition]', '执行失败')
    if (await page.locator('input[name=rule-consecutive]').count()) throw new Error('RUN_FAILED shows the failure count')
    await pick('[data-testid=rule-tasks]', 'console-fail')
    await page.keyboard.press('Escape')
    await pick('[data-testid=rule-channels]', 'e2e-hook')
    await page.keyboard.press('Escape')
    await page.fill('input[name=rule-group-wait]', '1')
    await page.keyboard.press('Tab')
    await page.click('[data-testid=rule-add-step]')
    await page.click('[data-testid=rule-submit]')
    await page.waitForSelector('[data-testid=rule-step] .field-error')
    const stepError = (await page.textContent('[data-testid=rule-step] .field-error')).trim()
    await shot(page, 'alerts-rule-dialog-zh-light')
    await pick('[data-testid=rule-step-channels]', 'e2e-hook')
    await page.keyboard.press('Escape')
    await page.click('[data-testid=rule-submit]')
    await rowOf('rules-table', 'e2e-failed').waitFor()
    const stored = await page.evaluate(async () => (await (await fetch('/api/v1/alert-rules/e2e-failed')).json()).data)
    if (stored.group_wait_seconds !== 1 || stored.escalation?.[0]?.channel_ids?.[0] !== 'e2e-hook')
      throw new Error(`the rule was stored as ${JSON.stringify(stored)}`)
    step(`rule created (an escalation step without channels refused at the step: "${stepError}")`)

    // A heartbeat monitor: its ping URL with the token, once.
    await page.click('#tab-monitors')
    await page.click('[data-testid=monitor-new]')
    await page.fill('input[name=monitor-id]', 'e2e-backup')
    await page.fill('input[name=monitor-description]', 'nightly backup on db-1')
    await page.click('[data-testid=monitor-submit]')
    await page.waitForSelector('[data-testid=monitor-ping-url]')
    const pingUrl = await page.inputValue('[data-testid=monitor-ping-url]')
    if (!new RegExp(`^${base}/api/v1/ping/[A-Za-z0-9_-]{20,}$`).test(pingUrl)) throw new Error(`ping URL "${pingUrl}"`)
    if (!(await page.textContent('[data-testid=monitor-curl]')).includes(pingUrl))
      throw new Error('the curl example lacks the URL')
    await shot(page, 'alerts-monitor-token-zh-light')
    await page.click('[data-testid=monitor-token-close]')
    await rowOf('monitors-table', 'e2e-backup').locator('[data-status=NEW]').waitFor()
    if ((await rowOf('monitors-table', 'e2e-backup').textContent()).includes(pingUrl.split('/').pop()))
      throw new Error('the monitor list shows the whole token')
    if (engine) {
      // The URL shown is the one a job pings: the monitor is UP.
      const status = await page.evaluate(async (url) => (await fetch(url, { method: 'POST' })).status, pingUrl)
      await page.click('#tab-monitors')
      await page.locator('button', { hasText: '刷新' }).click()
      await rowOf('monitors-table', 'e2e-backup').locator('[data-status=UP]').waitFor()
      step(`monitor created: the ping URL shown once (and a curl example); a ping (HTTP ${status}) turns it UP`)
    } else step('monitor created: the ping URL with its token shown once (and a curl example), listed as NEW')

    // A silence of the monitor for 2 hours.
    await page.click('#tab-silences')
    await page.click('[data-testid=silence-new]')
    await pick('[data-testid=silence-monitors]', 'e2e-backup')
    await page.keyboard.press('Escape')
    await page.fill('input[name=silence-reason]', 'e2e maintenance window')
    await shot(page, 'alerts-silence-dialog-zh-light')
    await page.click('[data-testid=silence-submit]')
    await rowOf('silences-table', 'e2e maintenance window').waitFor()
    step('silence created')

    // A failed run of console-fail raises an alert of e2e-failed (else the seeded one).
    let ruleOfAlert = 'e2e-seeded'
    if (engine) {
      ruleOfAlert = 'e2e-failed'
      const raised = await page.evaluate(async () => {
        const tasks = await (await fetch('/api/v1/tasks?keyword=console-fail')).json()
        await fetch(`/api/v1/tasks/${encodeURIComponent(tasks.data.items[0].task.id)}/trigger`, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: '{}',
        })
        for (let i = 0; i < 60; i++) {
          const alerts = await (await fetch('/api/v1/alerts?rule_id=e2e-failed&state=ALERT_STATE_FIRING')).json()
          if (alerts.data.items.length) return true
          await new Promise((r) => setTimeout(r, 250))
        }
        return false
      })
      if (!raised) throw new Error('no alert of e2e-failed 15 s after a failed run of console-fail')
    }
    await page.click('#tab-alerts')
    const alertRow = rowOf('alerts-table', ruleOfAlert)
    await alertRow.locator('[data-testid=alert-ack]').click()
    await page.fill('textarea[name=ack-comment]', '正在处理：磁盘已满')
    await shot(page, 'alerts-ack-dialog-zh-light')
    await page.click('[data-testid=ack-submit]')
    await alertRow.locator('[data-testid=alert-acked-by]', { hasText: 'admin' }).waitFor()
    if (await alertRow.locator('[data-testid=alert-ack]').count()) throw new Error('an acknowledged alert offers Acknowledge')
    step(`alert of ${ruleOfAlert} acknowledged with a comment (${engine ? 'raised by a failed run' : 'seeded: no alert engine'})`)
    if (engine) {
      // Its notification reached the receiver, and the outbox lists it delivered.
      await page.click('#tab-deliveries')
      const delivered = rowOf('deliveries-table', 'e2e-failed').locator('[data-status=DELIVERED]')
      for (let i = 0; i < 20 && !(await delivered.count()); i++) {
        await page.waitForTimeout(500)
        await page.locator('button', { hasText: '刷新' }).click()
      }
      await delivered.first().waitFor({ timeout: 1000 })
      if (!received.some((r) => r.body.includes('NOTIFICATION_KIND_FIRING') && r.body.includes('e2e-failed')))
        throw new Error('the receiver got no FIRING notification of e2e-failed')
      step('the alert was notified: the receiver got it, the deliveries tab lists it DELIVERED')
    }

    // Every tab, Chinese light, then English dark.
    for (const tab of TABS) {
      await page.goto(`${base}/alerts/${tab}`)
      await page.waitForSelector(`[data-testid=${tab}-table] .el-table__body-wrapper`)
      await shot(page, `alerts-${tab}-zh-light`)
      await audit(page, `alerts-${tab}-zh-light`)
    }
    await page.context().close()
    const dark = await newPage('dark', 'en')
    await login(dark, 'admin', adminPassword)
    for (const tab of TABS) {
      await dark.goto(`${base}/alerts/${tab}`)
      await dark.waitForSelector(`[data-testid=${tab}-table] .el-table__body-wrapper`)
      await shot(dark, `alerts-${tab}-en-dark`)
      await audit(dark, `alerts-${tab}-en-dark`)
    }
    await dark.goto(`${base}/alerts/rules`)
    await dark
      .locator('[data-testid=rules-table] .el-table__row', { hasText: 'e2e-failed' })
      .locator('[data-testid=rule-edit]')
      .click()
    await dark.waitForSelector('input[name=rule-id]')
    await shot(dark, 'alerts-rule-dialog-en-dark')
    await dark.context().close()

    // A viewer: every tab, no write control.
    const viewer = await newPage('light', 'en')
    await login(viewer, 'viewer', viewerPassword)
    for (const tab of TABS) {
      await viewer.goto(`${base}/alerts/${tab}`)
      await viewer.waitForSelector(`[data-testid=${tab}-table] .el-table__body-wrapper .el-table__row`)
      const write = await viewer
        .locator(
          '[data-testid$="-new"], [data-testid$="-edit"], [data-testid$="-delete"], [data-testid=alert-ack], ' +
            '[data-testid=silence-expire], [data-testid=channel-test]',
        )
        .count()
      if (write) throw new Error(`the viewer sees ${write} write controls on the ${tab} tab`)
    }
    await shot(viewer, 'alerts-channels-viewer-light')
    await viewer.context().close()
    step(`alert pages: the viewer sees no write control on the six tabs; ${Math.round((Date.now() - started) / 1000)} s in all`)
  } finally {
    receiver.close()
  }
}
