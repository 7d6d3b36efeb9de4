// SPDX-License-Identifier: Apache-2.0
import { afterEach, describe, expect, it, vi } from 'vitest'
import { agentRunsOption, durationRows, statsBy, type Breakdown } from '../../src/statsBreakdown'
import type { Stats } from '../../src/api/types'

afterEach(() => vi.unstubAllGlobals())

const stats = (fields: Partial<Record<keyof Stats, number | string>>) => fields as unknown as Stats

describe('statistics by agent and task', () => {
  it('asks the stats endpoint once, grouped, with the range and no series', async () => {
    const fetch = vi.fn<(url: string) => Promise<Response>>(
      async () =>
        new Response(
          JSON.stringify({
            code: 0,
            data: {
              summary: { total: '6' },
              groups: [
                { key: 't3', name: 'nightly', stats: { total: '5' } },
                { key: 't1', name: '', stats: { total: '1' } },
              ],
              group_count: 2,
            },
          }),
        ),
    )
    vi.stubGlobal('fetch', fetch)
    const rows = await statsBy('task', { range: '7d', granularity: 'DAY', time_zone: 'UTC' })
    expect(rows.map((r) => [r.id, r.label, r.stats.total])).toEqual([
      ['t3', 'nightly', '5'],
      ['t1', 't1', '1'],
    ])
    expect(fetch).toHaveBeenCalledTimes(1)
    const url = new URL(String(fetch.mock.calls[0][0]), 'http://x')
    expect(url.pathname).toBe('/api/v1/executions/stats')
    expect(url.searchParams.get('group_by')).toBe('task')
    expect(url.searchParams.get('range')).toBe('7d')
    expect(url.searchParams.has('granularity')).toBe(false)
  })

  it('charts agents with runs, most first, stacked by status', () => {
    const rows: Breakdown[] = [
      { id: 'a1', label: 'a1', stats: stats({ total: '2', success: '2' }) },
      { id: 'a2', label: 'a2', stats: stats({ total: '0' }) },
      { id: 'a3', label: 'a3', stats: stats({ total: '5', success: '3', failure: '2' }) },
    ]
    const option = agentRunsOption(rows, (s) => s)
    expect(option.yAxis.data).toEqual(['a3', 'a1'])
    expect(option.series.find((s) => s.name === 'FAILURE')?.data).toEqual([2, 0])
  })

  it('lists tasks that ran, slowest p95 first', () => {
    const rows: Breakdown[] = [
      { id: 't1', label: 'fast', stats: stats({ total: '3', p95_duration_ms: '10' }) },
      { id: 't2', label: 'idle', stats: stats({ total: '0' }) },
      { id: 't3', label: 'slow', stats: stats({ total: '1', p95_duration_ms: '900' }) },
    ]
    expect(durationRows(rows).map((r) => r.label)).toEqual(['slow', 'fast'])
  })
})
