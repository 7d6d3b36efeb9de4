// SPDX-License-Identifier: Apache-2.0
import { describe, expect, it } from 'vitest'
import {
  channelFromForm,
  emptyChannelForm,
  emptyMonitorForm,
  emptyRuleForm,
  emptySilenceForm,
  fieldError,
  formFromChannel,
  formFromRule,
  formatSeconds,
  monitorFromForm,
  pingUrl,
  ruleFromForm,
  silenceFromForm,
} from '../../src/alertForms'
import en from '../../src/locales/en'
import zh from '../../src/locales/zh-CN'

describe('alert rule form', () => {
  it('sends only the scope and threshold of its condition', () => {
    const form = {
      ...emptyRuleForm(),
      id: 'slow',
      condition: 'DURATION_ABOVE',
      taskIds: ['t1'],
      agentIds: ['a1'],
      monitorIds: ['m1'],
      durationAboveSeconds: 600,
      noSuccessWithinSeconds: 7200,
      channelIds: ['ops'],
      escalation: [{ afterSeconds: 1800, channelIds: ['boss'] }],
    }
    const rule = ruleFromForm(form)
    expect(rule.condition).toBe('ALERT_CONDITION_DURATION_ABOVE')
    expect(rule.scope).toEqual({ task_ids: ['t1'], group_ids: [], task_label_selector: '' })
    expect(rule.duration_above_seconds).toBe(600)
    expect(rule.no_success_within_seconds).toBeUndefined()
    expect(rule.consecutive_failures).toBeUndefined()
    expect(rule.escalation).toEqual([{ after_seconds: 1800, channel_ids: ['boss'] }])
    const agentRule = ruleFromForm({ ...form, condition: 'AGENT_OFFLINE' })
    expect(agentRule.scope).toEqual({ agent_ids: ['a1'], group_ids: [] })
    expect(agentRule.agent_offline_seconds).toBe(300)
    expect(ruleFromForm({ ...form, condition: 'MONITOR_DOWN' }).scope).toEqual({ monitor_ids: ['m1'] })
  })

  it('reads a stored rule back with the defaults for unset fields', () => {
    const form = formFromRule({
      id: 'r',
      condition: 'ALERT_CONDITION_CONSECUTIVE_FAILURES',
      severity: 'ALERT_SEVERITY_CRITICAL',
      consecutive_failures: 5,
      channel_ids: ['ops'],
    })
    expect(form.condition).toBe('CONSECUTIVE_FAILURES')
    expect(form.severity).toBe('CRITICAL')
    expect(form.consecutiveFailures).toBe(5)
    expect(form.repeatIntervalSeconds).toBe(14400)
    expect(ruleFromForm(form).consecutive_failures).toBe(5)
  })
})

describe('channel form', () => {
  it('sends a secret only when one is entered, from the chosen source', () => {
    const stored = formFromChannel({
      id: 'hook',
      type: 'CHANNEL_TYPE_WEBHOOK',
      url: 'https://example.com/h',
      secret: { set: true, hint: 'inline …9z' },
    })
    expect(stored.secret.hint).toBe('inline …9z')
    expect(channelFromForm(stored).secret).toBeUndefined() // kept by the API
    stored.secret.source = 'env'
    stored.secret.text = ' HOOK_KEY '
    expect(channelFromForm(stored).secret).toEqual({ env: 'HOOK_KEY' })
  })

  it('sends the fields of its type only', () => {
    const email = channelFromForm({
      ...emptyChannelForm(),
      id: 'mail',
      type: 'EMAIL',
      url: 'https://left.over',
      smtpHost: 'smtp.example.com',
      from: 'qf@example.com',
      to: 'a@example.com\n b@example.com, c@example.com',
      password: { source: 'value', text: 'pw', hint: '' },
    })
    expect(email.url).toBeUndefined()
    expect(email.email?.to).toEqual(['a@example.com', 'b@example.com', 'c@example.com'])
    expect(email.email?.password).toEqual({ value: 'pw' })
    expect(email.email?.security).toBe('SMTP_SECURITY_STARTTLS_REQUIRED')
    const slack = channelFromForm({ ...emptyChannelForm(), id: 's', type: 'SLACK', url: 'https://hooks.slack.com/x' })
    expect(slack.email).toBeUndefined()
    expect(slack.secret).toBeUndefined()
    expect(slack.url).toBe('https://hooks.slack.com/x')
  })
})

describe('silences, monitors, field errors', () => {
  it('a silence ends its duration from now', () => {
    const s = silenceFromForm(
      { ...emptySilenceForm(), ruleIds: ['r'], durationSeconds: 3600, reason: ' deploy ' },
      1000,
    )
    expect(s).toMatchObject({ rule_ids: ['r'], ends_unix_ms: 3601000, reason: 'deploy' })
  })

  it('a monitor sends cron or period, not both', () => {
    const cron = monitorFromForm({ ...emptyMonitorForm(), id: 'm', kind: 'cron', cron: '0 3 * * *' })
    expect(cron.cron).toBe('0 3 * * *')
    expect('period_seconds' in cron).toBe(false)
    expect(monitorFromForm({ ...emptyMonitorForm(), id: 'm', cron: '0 3 * * *' }).cron).toBeUndefined()
    expect(pingUrl('https://qf.example.com', 'abc')).toBe('https://qf.example.com/api/v1/ping/abc')
  })

  it('finds the reason for a field and for what is under it', () => {
    const details = [
      { field: 'email.to[1]', reason: '"x" is not an e-mail address' },
      { field: 'channel_ids', reason: 'give at least one channel' },
    ]
    expect(fieldError(details, 'channel_ids')).toBe('give at least one channel')
    expect(fieldError(details, 'email.to')).toBe('[1]: "x" is not an e-mail address')
    expect(fieldError(details, 'email')).toBe('to[1]: "x" is not an e-mail address')
    expect(fieldError(details, 'channel')).toBeUndefined()
    expect(formatSeconds(7200)).toBe('2 h')
    expect(formatSeconds(90)).toBe('90 s')
    const zhSpan = (unit: string, n: number) => zh.alerts.span[unit as 'h'].replace('{n}', String(n))
    expect(formatSeconds(7200, zhSpan)).toBe('2 小时')
    expect(formatSeconds(300, zhSpan)).toBe('5 分钟')
  })
})

describe('alert pages in both languages', () => {
  function keys(o: object, prefix = ''): string[] {
    return Object.entries(o).flatMap(([k, v]) =>
      typeof v === 'object' ? keys(v, `${prefix}${k}.`) : [`${prefix}${k}`],
    )
  }
  it('every English text has a Chinese one, and none is left in English', () => {
    expect(keys(zh.alerts).sort()).toEqual(keys(en.alerts).sort())
    const same = keys(en.alerts).filter((k) => {
      const get = (o: object) => k.split('.').reduce((x: unknown, p) => (x as Record<string, unknown>)[p], o)
      return get(en.alerts) === get(zh.alerts)
    })
    // Names that are the same in both: brands, URL, the example paths.
    expect(same.sort()).toEqual(
      [
        'channelTypes.PAGERDUTY',
        'channelTypes.SLACK',
        'channelTypes.WEBHOOK',
        'pingUrl',
        'secretPlaceholder.file',
        'url',
      ].sort(),
    )
  })
})
