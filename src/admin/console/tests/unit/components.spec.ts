// SPDX-License-Identifier: Apache-2.0
import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia } from 'pinia'
import ElementPlus from 'element-plus'
import { i18n } from '../../src/i18n'
import StatusTag from '../../src/components/StatusTag.vue'
import CronPreview from '../../src/components/CronPreview.vue'
import LogViewer from '../../src/components/LogViewer.vue'
import TriggerDialog from '../../src/components/TriggerDialog.vue'
import { buildTask, formFromTask } from '../../src/taskForm'

const plugins = [createPinia(), i18n, ElementPlus]

afterEach(() => {
  vi.unstubAllGlobals()
  vi.useRealTimers()
})

describe('StatusTag', () => {
  it('names the status in the current language', async () => {
    i18n.global.locale.value = 'zh-CN'
    const w = mount(StatusTag, { props: { status: 'EXECUTION_STATUS_FAILURE' }, global: { plugins } })
    expect(w.text()).toBe('失败')
    expect(w.find('[data-status="FAILURE"]').exists()).toBe(true)
    i18n.global.locale.value = 'en'
    await w.vm.$nextTick()
    expect(w.text()).toBe('Failure')
  })
})

describe('CronPreview', () => {
  it("shows the API's next fires and description, and its error for a bad expression", async () => {
    vi.useFakeTimers()
    const fetch = vi.fn((url: string) =>
      Promise.resolve(
        url.includes('expr=61')
          ? new Response(
              JSON.stringify({
                code: 1,
                message: 'invalid',
                details: [{ field: 'expr', reason: 'minute: 61 is out of range 0-59' }],
              }),
              { status: 400 },
            )
          : new Response(
              JSON.stringify({
                code: 0,
                data: {
                  description: 'At 02:00, every day',
                  next_fires: [
                    {
                      unix_ms: '1',
                      local_time: '2026-03-29T03:00:00+02:00',
                      zone_abbreviation: 'CEST',
                      dst_rule: 'DST_RULE_GAP_SHIFTED',
                      near_dst_transition: true,
                    },
                  ],
                  dst_notes: ['2026-03-29 02:00 does not exist'],
                  fixed_time: true,
                  time_zone: 'Europe/Paris',
                },
              }),
            ),
      ),
    )
    vi.stubGlobal('fetch', fetch)
    const w = mount(CronPreview, { props: { expr: '0 2 * * *', timeZone: 'Europe/Paris' }, global: { plugins } })
    await vi.advanceTimersByTimeAsync(300)
    await flushPromises()
    expect(fetch.mock.calls[0][0]).toContain('/api/v1/tasks/cron/parse?expr=0+2+*+*+*&time_zone=Europe%2FParis')
    expect(w.text()).toContain('At 02:00, every day')
    expect(w.text()).toContain('2026-03-29 03:00:00+02:00')
    expect(w.text()).toContain('GAP_SHIFTED')
    expect(w.text()).toContain('does not exist')
    await w.setProps({ expr: '61 * * * *' })
    await vi.advanceTimersByTimeAsync(300)
    await flushPromises()
    expect(w.find('[data-testid="cron-preview-error"]').text()).toBe('minute: 61 is out of range 0-59')
    expect(w.emitted('error')?.slice(-1)[0]).toEqual(['minute: 61 is out of range 0-59'])
  })
})

describe('LogViewer', () => {
  it('reads the log in slices until the end and highlights a search', async () => {
    const part = 'line one\nline two ERROR here\n'
    const fetch = vi.fn((url: string) => {
      const offset = Number(new URL(url, 'http://x').searchParams.get('offset'))
      const data = offset === 0 ? part : offset === part.length ? 'tail ERROR\n' : ''
      return Promise.resolve(
        new Response(
          JSON.stringify({
            code: 0,
            data: {
              chunk: { offset, data, total_bytes: part.length + 11, eof: offset > 0 },
              source: 'LOG_SOURCE_AGENT',
              truncated: false,
            },
          }),
        ),
      )
    })
    vi.stubGlobal('fetch', fetch)
    const w = mount(LogViewer, { props: { executionId: 't:1:a', running: false }, global: { plugins } })
    await flushPromises()
    expect(fetch).toHaveBeenCalledTimes(2)
    expect(w.find('[data-testid="log-text"]').text()).toBe(part + 'tail ERROR')
    await w.find('input[data-testid="log-search"]').setValue('error')
    expect(w.findAll('mark')).toHaveLength(2)
  })
})

describe('task form', () => {
  it('builds the API task from the form and keeps the fields it does not show', () => {
    const original = {
      id: 't1',
      name: 'old',
      schedule: { cron: '0 2 * * *', time_zone: 'Europe/Paris', jitter_seconds: 5 } as never,
      shell: { script: 'echo hi', env: { A: '1' } } as never,
      placement: { mode: 'PLACEMENT_MODE_ONE', routing: 'ROUTING_STRATEGY_RANDOM' },
      group_ids: ['g1'],
      labels: { team: 'ops' },
    }
    const form = formFromTask(original)
    expect(form.kind).toBe('cron')
    expect(form.placement).toBe('ONE')
    form.kind = 'interval'
    form.intervalSeconds = 90
    form.name = ' renamed '
    const task = buildTask(form, original)
    expect(task.name).toBe('renamed')
    expect(task.schedule).toEqual({ interval_seconds: 90, time_zone: 'Europe/Paris', jitter_seconds: 5 })
    expect(task.labels).toEqual({ team: 'ops' })
    expect((task.shell as { env: unknown }).env).toEqual({ A: '1' })
    expect(task.placement?.routing).toBe('ROUTING_STRATEGY_RANDOM')
  })

  it('keeps an agent-start (@reboot) task an agent-start task through an edit', () => {
    const original = {
      id: 't2',
      name: 'warm-cache',
      schedule: { agent_start: {}, time_zone: 'UTC' },
      placement: { mode: 'PLACEMENT_MODE_ALL' },
    }
    const form = formFromTask(original)
    expect(form.kind).toBe('agent_start')
    form.description = 'edited'
    const task = buildTask(form, original)
    expect(task.schedule).toEqual({ agent_start: {}, time_zone: 'UTC' })
    form.kind = 'cron'
    form.cron = '0 3 * * *'
    expect(buildTask(form, original).schedule).toEqual({ cron: '0 3 * * *', time_zone: 'UTC' })
  })
})

describe('TriggerDialog', () => {
  const summary = { task: { id: 't1', name: 'backup', group_ids: ['g1', 'g2'] } } as never
  it("asks the server for each group's online agents instead of filtering 500 in the browser", async () => {
    const fetch = vi.fn((url: string) => {
      const group = new URL(url, 'http://x').searchParams.get('group_id')
      return Promise.resolve(
        new Response(
          JSON.stringify({
            code: 0,
            data: { items: [{ id: `a-${group}`, hostname: 'h', group_id: group }], total: 1 },
          }),
        ),
      )
    })
    vi.stubGlobal('fetch', fetch)
    const w = mount(TriggerDialog, { props: { summary }, global: { plugins }, attachTo: document.body })
    await flushPromises()
    const urls = fetch.mock.calls.map((c) => String(c[0]))
    expect(urls).toHaveLength(2)
    expect(urls.some((u) => u.includes('group_id=g1'))).toBe(true)
    expect(urls.some((u) => u.includes('group_id=g2'))).toBe(true)
    expect(urls.every((u) => u.includes('state=ONLINE'))).toBe(true)
    w.unmount()
  })

  it("shows the API's message when the agent list cannot be read", async () => {
    vi.stubGlobal('fetch', () =>
      Promise.resolve(
        new Response(JSON.stringify({ code: 7, message: 'permission denied: agents.read' }), { status: 403 }),
      ),
    )
    const w = mount(TriggerDialog, { props: { summary }, global: { plugins }, attachTo: document.body })
    await flushPromises()
    expect(document.body.textContent).toContain('permission denied: agents.read')
    w.unmount()
  })
})
