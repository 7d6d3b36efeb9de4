// SPDX-License-Identifier: Apache-2.0
// The task form's flat fields to and from the API's Task (fields the form does not show
// are kept from the task being edited).
import type { Task } from './api/types'

export interface TaskForm {
  name: string
  description: string
  kind: 'cron' | 'interval' | 'manual' | 'agent_start'
  cron: string
  intervalSeconds: number
  timeZone: string
  executor: 'shell' | 'http'
  script: string
  httpMethod: string
  url: string
  groupIds: string[]
  allAgents: boolean
  placement: 'ALL' | 'ONE' | 'SHARDED'
  shardCount: number
  timeoutSeconds: number
  maxRetries: number
  enabled: boolean
}

export function formFromTask(task: Task): TaskForm {
  const s = task.schedule ?? {}
  const mode = (task.placement?.mode ?? '').replace('PLACEMENT_MODE_', '')
  return {
    name: task.name ?? '',
    description: task.description ?? '',
    kind: s.interval_seconds ? 'interval' : s.manual ? 'manual' : s.agent_start ? 'agent_start' : 'cron',
    cron: s.cron ?? '',
    intervalSeconds: s.interval_seconds ?? 60,
    timeZone: s.time_zone || 'UTC',
    executor: task.http ? 'http' : 'shell',
    script: task.shell?.script ?? (task.shell?.argv ?? []).join(' '),
    httpMethod: task.http?.method || 'GET',
    url: task.http?.url ?? '',
    groupIds: task.group_ids ?? [],
    allAgents: task.all_agents ?? false,
    placement: mode === 'ONE' || mode === 'SHARDED' ? mode : 'ALL',
    shardCount: task.placement?.shard_count || 2,
    timeoutSeconds: task.timeout_seconds ?? 0,
    maxRetries: task.retry?.max_retries ?? 0,
    enabled: task.enabled !== false,
  }
}

export function buildTask(form: TaskForm, original: Task | null): Task {
  const task: Task = original ? JSON.parse(JSON.stringify(original)) : { name: '' }
  task.name = form.name.trim()
  task.description = form.description
  task.enabled = form.enabled
  const schedule = { ...(task.schedule ?? {}) }
  delete schedule.cron
  delete schedule.interval_seconds
  delete schedule.manual
  delete schedule.agent_start
  delete schedule.fixed_delay_seconds
  delete schedule.once_at_unix_ms
  if (form.kind === 'cron') schedule.cron = form.cron.trim()
  else if (form.kind === 'interval') schedule.interval_seconds = form.intervalSeconds
  else if (form.kind === 'agent_start') schedule.agent_start = {}
  else schedule.manual = {}
  schedule.time_zone = form.timeZone
  task.schedule = schedule
  delete task.shell
  delete task.http
  delete task.plugin
  if (form.executor === 'shell') task.shell = { ...(original?.shell ?? {}), script: form.script, argv: [] }
  else task.http = { ...(original?.http ?? {}), method: form.httpMethod, url: form.url }
  task.all_agents = form.allAgents
  task.group_ids = form.allAgents ? [] : form.groupIds
  delete task.group_names
  task.placement = {
    ...(original?.placement ?? {}),
    mode: 'PLACEMENT_MODE_' + form.placement,
    shard_count: form.placement === 'SHARDED' ? form.shardCount : 0,
  }
  task.timeout_seconds = form.timeoutSeconds
  task.retry = { ...(original?.retry ?? {}), max_retries: form.maxRetries }
  return task
}
