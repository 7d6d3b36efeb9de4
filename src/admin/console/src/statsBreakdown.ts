// SPDX-License-Identifier: Apache-2.0
// Statistics broken down by agent and by task. GET /executions/stats has no group-by: it
// filters by one agent_id or task_id, so the console asks once per agent (or task), a few
// at a time, with the page's range, and charts the summaries.
import { api, num } from './api/client'
import type { Stats, StatsResponse } from './api/types'

export interface Breakdown {
  id: string
  label: string
  stats: Stats
}

/** The summary of the range for each key (`agent_id` or `task_id`), at most `limit` at once. */
export async function statsBy(
  key: 'agent_id' | 'task_id',
  items: { id: string; label: string }[],
  query: Record<string, string | number>,
  limit = 6,
): Promise<Breakdown[]> {
  const out: Breakdown[] = new Array(items.length)
  let next = 0
  async function worker() {
    while (next < items.length) {
      const i = next++
      const r = await api.get<StatsResponse>('/executions/stats', {
        ...query,
        granularity: undefined,
        top_n: 1,
        [key]: items[i].id,
      } as Record<string, string | number>)
      out[i] = { ...items[i], stats: r.summary }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

/** Runs per agent, stacked by status, agents with most runs first (agents without runs left
 *  out). */
export function agentRunsOption(rows: Breakdown[], statusName: (key: string) => string) {
  const shown = rows
    .filter((r) => num(r.stats.total) + num(r.stats.skipped) + num(r.stats.missed) > 0)
    .sort((a, b) => num(b.stats.total) - num(a.stats.total))
  const bar = (key: 'success' | 'failure' | 'timeout' | 'cancelled' | 'skipped' | 'missed', color: string) => ({
    name: statusName(key.toUpperCase()),
    type: 'bar',
    stack: 'runs',
    barMaxWidth: 28,
    itemStyle: { color },
    data: shown.map((r) => num(r.stats[key])),
  })
  return {
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    legend: { top: 0 },
    grid: { left: 8, right: 24, top: 36, bottom: 8, containLabel: true },
    xAxis: { type: 'value', minInterval: 1 },
    yAxis: { type: 'category', inverse: true, data: shown.map((r) => r.label) },
    series: [
      bar('success', '#67c23a'),
      bar('failure', '#f56c6c'),
      bar('timeout', '#e6a23c'),
      bar('cancelled', '#909399'),
      bar('skipped', '#b1b3b8'),
      bar('missed', '#f89898'),
    ],
  }
}

/** Tasks that ran in the range, slowest p95 first. */
export function durationRows(rows: Breakdown[]): Breakdown[] {
  return rows
    .filter((r) => num(r.stats.total) > 0)
    .sort((a, b) => num(b.stats.p95_duration_ms) - num(a.stats.p95_duration_ms))
}
