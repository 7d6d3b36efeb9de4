// SPDX-License-Identifier: Apache-2.0
// The API's objects as the console reads them (protobuf JSON, proto field names; int64
// values arrive as strings, enums as their full names).
export type Int64 = string | number

export interface Schedule {
  cron?: string
  interval_seconds?: number
  fixed_delay_seconds?: number
  once_at_unix_ms?: Int64
  manual?: Record<string, never>
  agent_start?: Record<string, never>
  time_zone?: string
}

export interface Task {
  id?: string
  name: string
  description?: string
  enabled?: boolean
  shell?: { argv?: string[]; script?: string; interpreter?: string[]; working_dir?: string }
  http?: { method?: string; url?: string; body?: string; timeout_seconds?: number }
  plugin?: { name?: string }
  schedule?: Schedule
  placement?: { mode?: string; routing?: string; shard_count?: number }
  timeout_seconds?: number
  retry?: { max_retries?: number; interval_seconds?: number }
  overlap_policy?: string
  misfire_policy?: string
  group_ids?: string[]
  group_names?: string[]
  all_agents?: boolean
  labels?: Record<string, string>
  revision?: Int64
  updated_at_unix_ms?: Int64
}

export interface TaskSummary {
  task: Task
  next_fire_unix_ms: Int64
  schedule_description: string
  last_execution_id: string
  last_status: string
  last_scheduled_unix_ms: Int64
  run_count: Int64
  success_count: Int64
  failure_count: Int64
  running_count: number
  target_agent_count: number
  online_agent_count: number
}

export interface Page<T> {
  items: T[]
  total: Int64
  page: number
  page_size: number
}

export interface Execution {
  execution_id: string
  task_id: string
  agent_id: string
  status: string
  trigger: string
  scheduled_unix_ms: Int64
  started_unix_ms: Int64
  ended_unix_ms: Int64
  duration_ms: Int64
  exit_code?: number
  output?: string
  output_truncated?: boolean
  error_message: string
  attempt: number
  task_name: string
  agent_hostname: string
  group_id: string
  shard_index: number
  shard_total: number
  skip_reason: string
  skip_detail: string
  failure_reason: string
  output_bytes: Int64
  params?: Record<string, string>
  triggered_by: string
}

export interface ExecutionLog {
  chunk: { execution_id: string; offset: Int64; data: string; total_bytes: Int64; eof: boolean }
  source: string
  truncated: boolean
  error_message: string
}

export interface NextFire {
  unix_ms: Int64
  local_time: string
  utc_offset_seconds: number
  zone_abbreviation: string
  dst_rule: string
  near_dst_transition: boolean
}

export interface CronPreview {
  next_fires: NextFire[]
  description: string
  fixed_time: boolean
  dst_notes: string[]
  time_zone: string
}

export interface LabelSelector {
  match_labels?: Record<string, string>
}

export interface GroupMembership {
  cidrs?: string[]
  hostname_globs?: string[]
  label_selectors?: LabelSelector[]
  priority?: number
}

export interface Group {
  id: string
  name: string
  description?: string
  tags?: string[]
  membership?: GroupMembership
  revision?: number | string
  created_at_unix_ms?: number | string
  updated_at_unix_ms?: number | string
  created_by?: string
}

export interface GroupSummary {
  group: Group
  agent_count: number
  online_agent_count: number
  task_count: number
}

export interface Agent {
  id: string
  hostname: string
  ips: string[]
  group_id: string
  group_name: string
  version: string
  platform: string
  state: string
  last_heartbeat_unix_ms: Int64
  clock_offset_ms: Int64
  desired_config_version: Int64
  applied_config_version: Int64
  running_executions: number
  pending_sync_records: Int64
  local_store_disk_full?: boolean
}

export interface FailureReasonCount {
  reason: string
  count: Int64
  example_error_message: string
}

export interface Stats {
  from_unix_ms: Int64
  to_unix_ms: Int64
  total: Int64
  success: Int64
  failure: Int64
  timeout: Int64
  cancelled: Int64
  skipped: Int64
  missed: Int64
  running: Int64
  pending: Int64
  success_rate_percent: number
  avg_duration_ms: Int64
  p50_duration_ms: Int64
  p95_duration_ms: Int64
  max_duration_ms: Int64
  top_failure_reasons: FailureReasonCount[]
}

export interface StatsResponse {
  summary: Stats
  series: Stats[]
  top_failing_tasks: {
    task_id: string
    task_name: string
    failure_count: Int64
    total: Int64
    success_rate_percent: number
  }[]
  /** With group_by: per agent or task, most executions first (at most 1,000). */
  groups?: { key: string; name: string; stats: Stats }[]
  group_count?: number
}

export interface User {
  id: string
  username: string
  display_name: string
  email: string
  role: string
  disabled: boolean
  totp_enabled: boolean
  settings?: Record<string, string>
  last_login_unix_ms: Int64
  password_change_required: boolean
}

export interface ApiToken {
  id: string
  name: string
  role: string
  user_id: string
  token_prefix: string
  expires_at_unix_ms: Int64
  created_at_unix_ms: Int64
  last_used_unix_ms: Int64
  revoked: boolean
}

export interface AuditEntry {
  id: Int64
  at_unix_ms: Int64
  actor: string
  action: string
  target_type: string
  target_id: string
  target_name: string
  source_ip: string
  success: boolean
  detail: string
  before_json: string
  after_json: string
}

// ---- alerts (alerts.proto) ----

export interface AlertScope {
  task_ids?: string[]
  group_ids?: string[]
  agent_ids?: string[]
  monitor_ids?: string[]
  task_label_selector?: string
}

export interface EscalationStep {
  after_seconds?: number
  channel_ids?: string[]
}

export interface AlertRule {
  id: string
  description?: string
  disabled?: boolean
  condition?: string
  scope?: AlertScope
  severity?: string
  consecutive_failures?: number
  duration_above_seconds?: number
  duration_p95_factor?: number
  no_success_within_seconds?: number
  agent_offline_seconds?: number
  channel_ids?: string[]
  escalation?: EscalationStep[]
  group_wait_seconds?: number
  group_interval_seconds?: number
  repeat_interval_seconds?: number
  no_recovery_notice?: boolean
  language?: string
  created_unix_ms?: Int64
  updated_unix_ms?: Int64
}

/** Write only: value, file or env; answers carry only `set` and `hint`. */
export interface Secret {
  value?: string
  file?: string
  env?: string
  set?: boolean
  hint?: string
}

export interface EmailSettings {
  smtp_host?: string
  smtp_port?: number
  security?: string
  username?: string
  password?: Secret
  from?: string
  to?: string[]
  ca_file?: string
}

export interface Channel {
  id: string
  description?: string
  type?: string
  disabled?: boolean
  url?: string
  secret?: Secret
  email?: EmailSettings
  timeout_seconds?: number
  language?: string
  ca_file?: string
  created_unix_ms?: Int64
  updated_unix_ms?: Int64
}

export interface Silence {
  id?: string
  rule_ids?: string[]
  task_ids?: string[]
  agent_ids?: string[]
  monitor_ids?: string[]
  starts_unix_ms?: Int64
  ends_unix_ms?: Int64
  reason?: string
  created_by?: string
  created_unix_ms?: Int64
}

export interface Alert {
  id: string
  rule_id: string
  state: string
  severity?: string
  condition?: string
  task_id?: string
  agent_id?: string
  monitor_id?: string
  summary?: string
  started_unix_ms?: Int64
  resolved_unix_ms?: Int64
  execution_id?: string
  count?: number
  last_notified_unix_ms?: Int64
  acknowledged_by?: string
  acknowledged_unix_ms?: Int64
  acknowledge_comment?: string
  escalation_level?: number
}

export interface DeliveryAttempt {
  at_unix_ms?: Int64
  http_status?: number
  error?: string
  duration_ms?: Int64
}

export interface Delivery {
  id: string
  kind?: string
  state?: string
  channel_id?: string
  notification?: { id?: string; kind?: string; rule_id?: string; items?: { alert?: Alert }[] }
  execution_id?: string
  callback_index?: number
  created_unix_ms?: Int64
  next_attempt_unix_ms?: Int64
  attempts?: DeliveryAttempt[]
  attempt_count?: number
}

export interface Monitor {
  id: string
  description?: string
  cron?: string
  time_zone?: string
  period_seconds?: number
  grace_seconds?: number
  paused?: boolean
  token?: string
  last_ping_unix_ms?: Int64
  last_start_unix_ms?: Int64
  last_fail_unix_ms?: Int64
  status?: string
  created_unix_ms?: Int64
}
