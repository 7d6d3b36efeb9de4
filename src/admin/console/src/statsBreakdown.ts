// SPDX-License-Identifier: Apache-2.0
// Statistics broken down by agent and by task: one GET /executions/stats?group_by=agent|task
// with the page's range, charted from the groups it returns.
import { api, num } from './api/client'
import type { Stats, StatsResponse } from './api/types'

export interface Breakdown {
  id: string
  label: string
  stats: Stats
}

/** The summary of the range for each agent (labelled by id) or task (labelled by name) with
 *  executions in it, from one request. */
export async function statsBy(groupBy: 'agent' | 'task', query: Record<string, string | number>): Promise<Breakdown[]> {
  const grouped: Record<string, string | number> = { ...query, top_n: 1, group_by: groupBy }
  delete grouped.granularity // the summaries only, no series
  const r = await api.get<StatsResponse>('/executions/stats', grouped)
  return (r.groups ?? []).map((g) => ({
    id: g.key,
    label: groupBy === 'agent' ? g.key || '—' : g.name || g.key,
    stats: g.stats,
  }))
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
