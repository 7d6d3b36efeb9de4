// SPDX-License-Identifier: Apache-2.0
// The alert pages' forms to and from the API's objects (alerts.proto): a rule sends only
// its condition's fields, a channel only its type's, secrets only when a new one is entered
// (an edit without one keeps the stored secret); the API's field violations by field path.
import type { FieldViolation } from './api/client'
import type { AlertRule, Channel, Monitor, Secret, Silence } from './api/types'

export const CONDITIONS = [
  'RUN_FAILED',
  'RUN_MISSED',
  'CONSECUTIVE_FAILURES',
  'DURATION_ABOVE',
  'NO_SUCCESS_WITHIN',
  'AGENT_OFFLINE',
  'CONFIG_PUSH_FAILED',
  'MONITOR_DOWN',
] as const
export const SEVERITIES = ['INFO', 'WARNING', 'CRITICAL'] as const
export const CHANNEL_TYPES = ['WEBHOOK', 'EMAIL', 'SLACK', 'DINGTALK', 'WECOM', 'FEISHU', 'PAGERDUTY'] as const
export const SMTP_SECURITY = ['STARTTLS_REQUIRED', 'TLS', 'NONE'] as const

/** What a condition watches: its scope fields. */
export function conditionSubject(condition: string): 'task' | 'agent' | 'monitor' {
  if (condition === 'AGENT_OFFLINE' || condition === 'CONFIG_PUSH_FAILED') return 'agent'
  if (condition === 'MONITOR_DOWN') return 'monitor'
  return 'task'
}

/** `ALERT_CONDITION_RUN_FAILED` -> `RUN_FAILED`. */
export function shortEnum(value: unknown, prefix: string): string {
  const text = typeof value === 'string' ? value : ''
  return text.startsWith(prefix) ? text.slice(prefix.length) : text
}

/** The reason the API gave for `field` or anything under it (`email` covers `email.to[1]`). */
export function fieldError(details: FieldViolation[], field: string): string | undefined {
  const hit = details.filter(
    (d) => d.field === field || d.field.startsWith(field + '.') || d.field.startsWith(field + '['),
  )
  if (!hit.length) return undefined
  return hit
    .map((d) => (d.field === field ? d.reason : `${d.field.slice(field.length).replace(/^\./, '')}: ${d.reason}`))
    .join('; ')
}

// ---- rules ----

export interface EscalationForm {
  afterSeconds: number
  channelIds: string[]
}

export interface RuleForm {
  id: string
  description: string
  disabled: boolean
  condition: string
  severity: string
  taskIds: string[]
  groupIds: string[]
  agentIds: string[]
  monitorIds: string[]
  taskLabelSelector: string
  consecutiveFailures: number
  durationAboveSeconds: number
  durationP95Factor: number
  noSuccessWithinSeconds: number
  agentOfflineSeconds: number
  channelIds: string[]
  escalation: EscalationForm[]
  groupWaitSeconds: number
  groupIntervalSeconds: number
  repeatIntervalSeconds: number
  noRecoveryNotice: boolean
  language: string
}

/** A new rule with the API's defaults filled in (so that the form shows them). */
export function emptyRuleForm(): RuleForm {
  return {
    id: '',
    description: '',
    disabled: false,
    condition: 'RUN_FAILED',
    severity: 'WARNING',
    taskIds: [],
    groupIds: [],
    agentIds: [],
    monitorIds: [],
    taskLabelSelector: '',
    consecutiveFailures: 3,
    durationAboveSeconds: 0,
    durationP95Factor: 0,
    noSuccessWithinSeconds: 86400,
    agentOfflineSeconds: 300,
    channelIds: [],
    escalation: [],
    groupWaitSeconds: 30,
    groupIntervalSeconds: 300,
    repeatIntervalSeconds: 14400,
    noRecoveryNotice: false,
    language: 'en',
  }
}

export function formFromRule(rule: AlertRule): RuleForm {
  const d = emptyRuleForm()
  const s = rule.scope ?? {}
  return {
    id: rule.id,
    description: rule.description ?? '',
    disabled: rule.disabled ?? false,
    condition: shortEnum(rule.condition, 'ALERT_CONDITION_') || d.condition,
    severity: shortEnum(rule.severity, 'ALERT_SEVERITY_') || d.severity,
    taskIds: [...(s.task_ids ?? [])],
    groupIds: [...(s.group_ids ?? [])],
    agentIds: [...(s.agent_ids ?? [])],
    monitorIds: [...(s.monitor_ids ?? [])],
    taskLabelSelector: s.task_label_selector ?? '',
    consecutiveFailures: rule.consecutive_failures || d.consecutiveFailures,
    durationAboveSeconds: rule.duration_above_seconds ?? 0,
    durationP95Factor: rule.duration_p95_factor ?? 0,
    noSuccessWithinSeconds: rule.no_success_within_seconds || d.noSuccessWithinSeconds,
    agentOfflineSeconds: rule.agent_offline_seconds || d.agentOfflineSeconds,
    channelIds: [...(rule.channel_ids ?? [])],
    escalation: (rule.escalation ?? []).map((e) => ({
      afterSeconds: e.after_seconds ?? 0,
      channelIds: [...(e.channel_ids ?? [])],
    })),
    groupWaitSeconds: rule.group_wait_seconds || d.groupWaitSeconds,
    groupIntervalSeconds: rule.group_interval_seconds || d.groupIntervalSeconds,
    repeatIntervalSeconds: rule.repeat_interval_seconds || d.repeatIntervalSeconds,
    noRecoveryNotice: rule.no_recovery_notice ?? false,
    language: rule.language || d.language,
  }
}

/** The rule to send: the scope and thresholds of its condition only. */
export function ruleFromForm(f: RuleForm): AlertRule {
  const subject = conditionSubject(f.condition)
  const rule: AlertRule = {
    id: f.id.trim(),
    description: f.description,
    disabled: f.disabled,
    condition: 'ALERT_CONDITION_' + f.condition,
    severity: 'ALERT_SEVERITY_' + f.severity,
    scope:
      subject === 'task'
        ? { task_ids: f.taskIds, group_ids: f.groupIds, task_label_selector: f.taskLabelSelector.trim() }
        : subject === 'agent'
          ? { agent_ids: f.agentIds, group_ids: f.groupIds }
          : { monitor_ids: f.monitorIds },
    channel_ids: f.channelIds,
    escalation: f.escalation.map((e) => ({ after_seconds: e.afterSeconds, channel_ids: e.channelIds })),
    group_wait_seconds: f.groupWaitSeconds,
    group_interval_seconds: f.groupIntervalSeconds,
    repeat_interval_seconds: f.repeatIntervalSeconds,
    no_recovery_notice: f.noRecoveryNotice,
    language: f.language,
  }
  if (f.condition === 'CONSECUTIVE_FAILURES') rule.consecutive_failures = f.consecutiveFailures
  if (f.condition === 'DURATION_ABOVE') {
    rule.duration_above_seconds = f.durationAboveSeconds
    rule.duration_p95_factor = f.durationP95Factor
  }
  if (f.condition === 'NO_SUCCESS_WITHIN') rule.no_success_within_seconds = f.noSuccessWithinSeconds
  if (f.condition === 'AGENT_OFFLINE') rule.agent_offline_seconds = f.agentOfflineSeconds
  return rule
}

// ---- channels ----

export type SecretSource = 'value' | 'file' | 'env'

/** A secret being edited: the stored one's hint, and a new one only when entered. */
export interface SecretForm {
  source: SecretSource
  text: string
  hint: string
}

export function secretForm(stored?: Secret): SecretForm {
  return { source: 'value', text: '', hint: stored?.set ? stored.hint || '•••' : '' }
}

/** A new secret to send, or undefined (keep the stored one, or none). */
export function secretFromForm(f: SecretForm): Secret | undefined {
  const text = f.text.trim()
  if (!text) return undefined
  return { [f.source]: f.source === 'value' ? f.text : text }
}

export interface ChannelForm {
  id: string
  description: string
  type: string
  disabled: boolean
  url: string
  secret: SecretForm
  smtpHost: string
  smtpPort: number
  security: string
  username: string
  password: SecretForm
  from: string
  to: string
  emailCaFile: string
  timeoutSeconds: number
  language: string
  caFile: string
}

export function emptyChannelForm(): ChannelForm {
  return {
    id: '',
    description: '',
    type: 'WEBHOOK',
    disabled: false,
    url: '',
    secret: secretForm(),
    smtpHost: '',
    smtpPort: 587,
    security: 'STARTTLS_REQUIRED',
    username: '',
    password: secretForm(),
    from: '',
    to: '',
    emailCaFile: '',
    timeoutSeconds: 10,
    language: '',
    caFile: '',
  }
}

export function formFromChannel(c: Channel): ChannelForm {
  const e = c.email ?? {}
  return {
    ...emptyChannelForm(),
    id: c.id,
    description: c.description ?? '',
    type: shortEnum(c.type, 'CHANNEL_TYPE_') || 'WEBHOOK',
    disabled: c.disabled ?? false,
    url: c.url ?? '',
    secret: secretForm(c.secret),
    smtpHost: e.smtp_host ?? '',
    smtpPort: e.smtp_port || 587,
    security: shortEnum(e.security, 'SMTP_SECURITY_') || 'STARTTLS_REQUIRED',
    username: e.username ?? '',
    password: secretForm(e.password),
    from: e.from ?? '',
    to: (e.to ?? []).join('\n'),
    emailCaFile: e.ca_file ?? '',
    timeoutSeconds: c.timeout_seconds || 10,
    language: c.language ?? '',
    caFile: c.ca_file ?? '',
  }
}

/** Which fields a channel type has. */
export function channelFields(type: string): { url: boolean; urlRequired: boolean; secret: boolean; email: boolean } {
  if (type === 'EMAIL') return { url: false, urlRequired: false, secret: false, email: true }
  if (type === 'PAGERDUTY') return { url: true, urlRequired: false, secret: true, email: false }
  const signed = type === 'WEBHOOK' || type === 'DINGTALK' || type === 'FEISHU'
  return { url: true, urlRequired: true, secret: signed, email: false }
}

export function channelFromForm(f: ChannelForm): Channel {
  const fields = channelFields(f.type)
  const channel: Channel = {
    id: f.id.trim(),
    description: f.description,
    type: 'CHANNEL_TYPE_' + f.type,
    disabled: f.disabled,
    timeout_seconds: f.timeoutSeconds,
    language: f.language,
  }
  if (fields.url) {
    channel.url = f.url.trim()
    channel.ca_file = f.caFile.trim()
  }
  if (fields.secret) {
    const secret = secretFromForm(f.secret)
    if (secret) channel.secret = secret
  }
  if (fields.email) {
    channel.email = {
      smtp_host: f.smtpHost.trim(),
      smtp_port: f.smtpPort,
      security: 'SMTP_SECURITY_' + f.security,
      username: f.username.trim(),
      from: f.from.trim(),
      to: f.to
        .split(/[\n,;]/)
        .map((s) => s.trim())
        .filter((s) => s !== ''),
      ca_file: f.emailCaFile.trim(),
    }
    const password = secretFromForm(f.password)
    if (password) channel.email.password = password
  }
  return channel
}

// ---- silences ----

export interface SilenceForm {
  ruleIds: string[]
  taskIds: string[]
  agentIds: string[]
  monitorIds: string[]
  durationSeconds: number
  reason: string
}

export function emptySilenceForm(): SilenceForm {
  return { ruleIds: [], taskIds: [], agentIds: [], monitorIds: [], durationSeconds: 7200, reason: '' }
}

export function silenceFromForm(f: SilenceForm, now = Date.now()): Silence {
  return {
    rule_ids: f.ruleIds,
    task_ids: f.taskIds,
    agent_ids: f.agentIds,
    monitor_ids: f.monitorIds,
    ends_unix_ms: now + f.durationSeconds * 1000,
    reason: f.reason.trim(),
  }
}

// ---- monitors ----

export interface MonitorForm {
  id: string
  description: string
  kind: 'cron' | 'period'
  cron: string
  timeZone: string
  periodSeconds: number
  graceSeconds: number
  paused: boolean
}

export function emptyMonitorForm(): MonitorForm {
  return {
    id: '',
    description: '',
    kind: 'period',
    cron: '',
    timeZone: '',
    periodSeconds: 3600,
    graceSeconds: 300,
    paused: false,
  }
}

export function formFromMonitor(m: Monitor): MonitorForm {
  return {
    id: m.id,
    description: m.description ?? '',
    kind: m.cron ? 'cron' : 'period',
    cron: m.cron ?? '',
    timeZone: m.time_zone ?? '',
    periodSeconds: m.period_seconds || 3600,
    graceSeconds: m.grace_seconds || 300,
    paused: m.paused ?? false,
  }
}

export function monitorFromForm(f: MonitorForm): Monitor {
  const m: Monitor = { id: f.id.trim(), description: f.description, grace_seconds: f.graceSeconds, paused: f.paused }
  if (f.kind === 'cron') {
    m.cron = f.cron.trim()
    m.time_zone = f.timeZone.trim()
  } else m.period_seconds = f.periodSeconds
  return m
}

/** The URL a job pings, from the console's own origin. */
export function pingUrl(origin: string, token: string): string {
  return `${origin}/api/v1/ping/${token}`
}

// ---- durations ----

export const DURATION_UNITS = [
  { unit: 'd', seconds: 86400 },
  { unit: 'h', seconds: 3600 },
  { unit: 'min', seconds: 60 },
  { unit: 's', seconds: 1 },
] as const

/** 7200 -> "2 h", 90 -> "90 s", 0 -> "—"; `span` words it in the page's language. */
export function formatSeconds(
  seconds: number | undefined,
  span: (unit: string, n: number) => string = (unit, n) => `${n} ${unit}`,
): string {
  const s = seconds ?? 0
  if (!s) return '—'
  const u = DURATION_UNITS.find((d) => s % d.seconds === 0) ?? DURATION_UNITS[3]
  return span(u.unit, s / u.seconds)
}
