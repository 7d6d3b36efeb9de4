// SPDX-License-Identifier: Apache-2.0
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { manifestFileName, manifestTask, tasksToManifestYaml } from '../../src/taskYaml'
import type { Task } from '../../src/api/types'

const task = {
  id: 'backup',
  name: 'backup',
  description: 'Nightly dump',
  enabled: false,
  schedule: {
    cron: '0 30 2 * * *',
    time_zone: 'Europe/Berlin',
    once_at_unix_ms: '0',
    window_end_unix_ms: '1800000000000',
  },
  placement: { mode: 'PLACEMENT_MODE_SHARDED', routing: 'ROUTING_STRATEGY_UNSPECIFIED', shard_count: 2 },
  shell: { script: 'pg_dump mydb > /backup/db.sql\necho done', argv: [], env: { MODE: 'OVERLAP_POLICY_SKIP' } },
  timeout_seconds: 3600,
  retry: { max_retries: 2, interval_seconds: 60, backoff_multiplier: 0, retry_on_exit_codes: [0, 1] },
  overlap_policy: 'OVERLAP_POLICY_SKIP',
  misfire_policy: 'MISFIRE_POLICY_FIRE_ONCE',
  group_ids: ['g-1', 'g-2'],
  group_names: ['db', 'backup'],
  all_agents: false,
  params: [{ name: 'target', default_value: 'primary', required: false }],
  revision: '7',
  config_version: '12',
  created_at_unix_ms: '1700000000000',
  updated_at_unix_ms: '1700000000001',
  created_by: 'admin',
  updated_by: 'admin',
} as unknown as Task

describe('task manifest YAML', () => {
  it('writes a task as qfctl task apply reads it', () => {
    expect(manifestTask(task)).toEqual({
      id: 'backup',
      name: 'backup',
      description: 'Nightly dump',
      enabled: false,
      schedule: { cron: '0 30 2 * * *', time_zone: 'Europe/Berlin', window_end_unix_ms: 1800000000000 },
      placement: { mode: 'sharded', shard_count: 2 },
      shell: { script: 'pg_dump mydb > /backup/db.sql\necho done', env: { MODE: 'OVERLAP_POLICY_SKIP' } },
      timeout_seconds: 3600,
      retry: { max_retries: 2, interval_seconds: 60, retry_on_exit_codes: [0, 1] },
      overlap_policy: 'skip',
      misfire_policy: 'fire_once',
      group_ids: ['db', 'backup'],
      params: [{ name: 'target', default_value: 'primary' }],
    })
  })

  it('says enabled for an enabled task and keeps group ids without names', () => {
    const entry = manifestTask({ name: 'x', enabled: true, group_ids: ['g-1'] })
    expect(entry).toEqual({ name: 'x', enabled: true, group_ids: ['g-1'] })
  })

  it('is a TaskManifest that parses back, with the script as a block', () => {
    const text = tasksToManifestYaml([task, { name: 'second', enabled: true, schedule: { cron: '@every 5s' } }])
    expect(text.startsWith('# A TaskManifest')).toBe(true)
    expect(text).toContain('script: |-\n')
    const doc = parse(text)
    expect(doc.tasks).toHaveLength(2)
    expect(doc.tasks[0].overlap_policy).toBe('skip')
    expect(doc.tasks[1]).toEqual({ name: 'second', enabled: true, schedule: { cron: '@every 5s' } })
    expect(text).not.toMatch(/revision|created_at|updated_by|group_names/)
  })

  it('keeps a manual schedule (an empty message)', () => {
    expect(manifestTask({ name: 'm', enabled: true, schedule: { manual: {} } as never })).toEqual({
      name: 'm',
      enabled: true,
      schedule: { manual: {} },
    })
  })

  it('names the file after the task', () => {
    expect(manifestFileName([task])).toBe('backup.yaml')
    expect(manifestFileName([task, task])).toBe('tasks-2.yaml')
    expect(manifestFileName([{ name: 'a b/c' }])).toBe('a_b_c.yaml')
  })
})
