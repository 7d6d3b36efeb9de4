// SPDX-License-Identifier: Apache-2.0
import { afterEach, describe, expect, it, vi } from 'vitest'
import { agentRunsOption, durationRows, statsBy, type Breakdown } from '../../src/statsBreakdown'
import type { Stats } from '../../src/api/types'

afterEach(() => vi.unstubAllGlobals())

const stats = (fields: Partial<Record<keyof Stats, number | string>>) => fields as unknown as Stats

describe('statistics by agent and task', () => {
  it('asks the stats endpoint once per agent with the range, a few at a time', async () => {
    let open = 0
    let most = 0
    const fetch = vi.fn(async (url: string) => {
      open++
      most = Math.max(most, open)
      await new Promise((r) => setTimeout(r, 5))
      open--
      const agent = new URL(url, 'http://x').searchParams.get('agent_id')
      return new Response(JSON.stringify({ code: 0, data: { summary: { total: agent === 'a3' ? '5' : '1' } } }))
    })
    vi.stubGlobal('fetch', fetch)
    const items = ['a1', 'a2', 'a3', 'a4', 'a5'].map((id) => ({ id, label: id }))
    const rows = await statsBy('agent_id', items, { range: '7d', granularity: 'DAY', time_zone: 'UTC' }, 2)
    expect(rows.map((r) => [r.id, r.stats.total])).toEqual([
      ['a1', '1'],
      ['a2', '1'],
      ['a3', '5'],
      ['a4', '1'],
      ['a5', '1'],
    ])
    expect(most).toBe(2)
    const url = new URL(String(fetch.mock.calls[0][0]), 'http://x')
    expect(url.pathname).toBe('/api/v1/executions/stats')
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
