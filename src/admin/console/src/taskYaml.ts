// SPDX-License-Identifier: Apache-2.0
// Tasks as a TaskManifest in YAML, the format `qfctl task apply -f` and the coordinator's
// manifest_file read: `tasks:` with protobuf field names, enum values by their short name
// (`skip` for OVERLAP_POLICY_SKIP), without the fields the coordinator fills in (revision,
// timestamps...) and without empty or default values; `enabled` is always written (a
// manifest task that does not say is enabled). Groups are named (`group_ids` may name
// groups, and names carry over to another cluster where the ids differ).
import { stringify } from 'yaml'
import type { Task } from './api/types'

/** Fields the coordinator fills in (as qfctl's `task edit` leaves out). */
const OUTPUT_FIELDS = new Set([
  'group_names',
  'upstream_task_ids',
  'revision',
  'config_version',
  'created_at_unix_ms',
  'updated_at_unix_ms',
  'created_by',
  'updated_by',
])

/** Enum-valued fields (by name, anywhere in the task) and their values' prefix. */
const ENUM_PREFIX: Record<string, string> = {
  mode: 'PLACEMENT_MODE_',
  routing: 'ROUTING_STRATEGY_',
  overlap_policy: 'OVERLAP_POLICY_',
  misfire_policy: 'MISFIRE_POLICY_',
  delivery_guarantee: 'DELIVERY_GUARANTEE_',
  dst_gap_policy: 'DST_GAP_POLICY_',
  dst_overlap_policy: 'DST_OVERLAP_POLICY_',
}

/** 64-bit fields protobuf JSON prints as strings: numbers in YAML. */
const INT64_FIELDS = new Set(['once_at_unix_ms', 'window_start_unix_ms', 'window_end_unix_ms', 'max_runs'])

/** Empty messages that mean something by being there (a oneof member). */
const EMPTY_MARKERS = new Set(['manual', 'agent_start'])

function clean(value: unknown, key: string): unknown {
  if (Array.isArray(value)) {
    // List items are kept as they are (exit code 0, an empty argv word); objects are cleaned.
    const items = value.map((v) => (v && typeof v === 'object' ? (clean(v, '') ?? {}) : v))
    return items.length ? items : undefined
  }
  if (value && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (OUTPUT_FIELDS.has(k)) continue
      const c = clean(v, k)
      if (c !== undefined) out[k] = c
    }
    // `manual: {}` / `agent_start: {}` (empty messages) are what make a schedule manual / @reboot.
    return Object.keys(out).length || EMPTY_MARKERS.has(key) ? out : undefined
  }
  if (typeof value === 'string') {
    const prefix = ENUM_PREFIX[key]
    if (prefix && value.startsWith(prefix)) {
      const short = value.slice(prefix.length).toLowerCase()
      return short === 'unspecified' ? undefined : short
    }
    if (INT64_FIELDS.has(key) && /^-?\d+$/.test(value)) return Number(value) || undefined
    return value === '' ? undefined : value
  }
  if (value === false || value === 0 || value === null) return undefined
  return value
}

/** One task as a manifest entry (a plain object, for YAML). */
export function manifestTask(task: Task): Record<string, unknown> {
  const entry = (clean(task, '') ?? {}) as Record<string, unknown>
  const names = task.group_names ?? []
  const ids = task.group_ids ?? []
  if (ids.length && names.length === ids.length && names.every((n) => n)) entry.group_ids = [...names]
  // Field order as in the README's manifest: id, name, description, enabled, then the rest.
  const { id, name, description, ...rest } = entry
  const ordered: Record<string, unknown> = {}
  if (id !== undefined) ordered.id = id
  ordered.name = name ?? task.name
  if (description !== undefined) ordered.description = description
  ordered.enabled = task.enabled !== false
  delete rest.enabled
  return { ...ordered, ...rest }
}

/** A TaskManifest of the tasks, in YAML. */
export function tasksToManifestYaml(tasks: Task[]): string {
  const header =
    "# A TaskManifest: qfctl task apply -f <file> (or the coordinator's manifest_file).\n" +
    `# Exported from the QuartzFlow console; ${tasks.length} task(s).\n`
  return header + stringify({ tasks: tasks.map(manifestTask) }, { lineWidth: 0, aliasDuplicateObjects: false })
}

/** A file name for the export: the task's name, or `tasks-<n>`. */
export function manifestFileName(tasks: Task[]): string {
  const base = tasks.length === 1 ? tasks[0].name || tasks[0].id || 'task' : `tasks-${tasks.length}`
  return base.replace(/[^A-Za-z0-9._-]+/g, '_') + '.yaml'
}

/** Offers the text as a file download. */
export function downloadText(text: string, fileName: string, type = 'application/yaml'): void {
  const url = URL.createObjectURL(new Blob([text], { type }))
  const a = document.createElement('a')
  a.href = url
  a.download = fileName
  document.body.appendChild(a)
  a.click()
  a.remove()
  setTimeout(() => URL.revokeObjectURL(url), 1000)
}
