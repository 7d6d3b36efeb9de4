// SPDX-License-Identifier: Apache-2.0
import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import { createMemoryHistory, createRouter } from 'vue-router'
import ElementPlus from 'element-plus'
import { i18n } from '../../src/i18n'
import { useAuthStore } from '../../src/stores/auth'
import RulesTab from '../../src/components/alerts/RulesTab.vue'
import ChannelsTab from '../../src/components/alerts/ChannelsTab.vue'
import SilencesTab from '../../src/components/alerts/SilencesTab.vue'
import MonitorsTab from '../../src/components/alerts/MonitorsTab.vue'
import AlertsTab from '../../src/components/alerts/AlertsTab.vue'
import RuleDialog from '../../src/components/alerts/RuleDialog.vue'

afterEach(() => {
  vi.unstubAllGlobals()
  document.body.innerHTML = ''
})

const ok = (data: unknown) => new Response(JSON.stringify({ code: 0, data }))
const page = (items: unknown[]) => ok({ items, total: items.length, page: 1, page_size: 20 })

/** One object in every list; `post` answers writes. */
function api(post: (url: string, body: unknown) => Response = () => ok({})) {
  const calls: { method: string; url: string; body: unknown }[] = []
  vi.stubGlobal('fetch', (url: string, init?: RequestInit) => {
    const u = String(url)
    const method = init?.method ?? 'GET'
    const body = init?.body ? JSON.parse(String(init.body)) : undefined
    calls.push({ method, url: u, body })
    if (method !== 'GET') return Promise.resolve(post(u, body))
    if (u.includes('/alert-rules'))
      return Promise.resolve(page([{ id: 'r1', condition: 'ALERT_CONDITION_RUN_FAILED', channel_ids: ['c1'] }]))
    if (u.includes('/channels'))
      return Promise.resolve(page([{ id: 'c1', type: 'CHANNEL_TYPE_WEBHOOK', url: 'https://x.example/h' }]))
    if (u.includes('/silences'))
      return Promise.resolve(
        page([{ id: 's1', rule_ids: ['r1'], ends_unix_ms: String(Date.now() + 60000), reason: 'deploy' }]),
      )
    if (u.includes('/monitors')) return Promise.resolve(page([{ id: 'm1', period_seconds: 3600, status: 'UP' }]))
    if (u.includes('/alerts'))
      return Promise.resolve(
        page([{ id: 'r1:task:t1:1', rule_id: 'r1', state: 'ALERT_STATE_FIRING', task_id: 't1', summary: 'failed' }]),
      )
    return Promise.resolve(page([]))
  })
  return calls
}

async function mountAs(role: string, view: object, props: Record<string, unknown> = {}) {
  const pinia = createPinia()
  setActivePinia(pinia)
  useAuthStore().user = { username: 'u', role } as never
  const router = createRouter({ history: createMemoryHistory(), routes: [{ path: '/:p(.*)*', component: view }] })
  await router.push('/')
  const w = mount(view, { props, global: { plugins: [pinia, i18n, ElementPlus, router] }, attachTo: document.body })
  await flushPromises()
  return w
}

const WRITE =
  '[data-testid$="-new"], [data-testid$="-edit"], [data-testid$="-delete"], [data-testid=alert-ack], [data-testid=silence-expire]'

describe('alert pages by role', () => {
  for (const [name, view] of [
    ['rules', RulesTab],
    ['channels', ChannelsTab],
    ['silences', SilencesTab],
    ['monitors', MonitorsTab],
    ['alerts', AlertsTab],
  ] as const) {
    it(`the ${name} tab shows write buttons to an operator and none to a viewer`, async () => {
      api()
      const operator = await mountAs('ROLE_OPERATOR', view)
      expect(operator.findAll(WRITE).length).toBeGreaterThan(0)
      operator.unmount()
      document.body.innerHTML = ''
      const viewer = await mountAs('ROLE_VIEWER', view)
      expect(viewer.findAll(WRITE).length).toBe(0)
      expect(viewer.text()).toContain(name === 'alerts' ? 'failed' : name === 'silences' ? 'deploy' : '1')
      viewer.unmount()
    })
  }
})

describe('rule dialog', () => {
  it("shows the condition's own fields only, and the API's refusal at its field", async () => {
    const calls = api((url) =>
      url.endsWith('/alert-rules')
        ? new Response(
            JSON.stringify({
              code: 4,
              message: 'invalid alert rule: channel_ids: give at least one channel',
              details: [{ field: 'channel_ids', reason: 'give at least one channel' }],
            }),
            { status: 400 },
          )
        : ok({}),
    )
    i18n.global.locale.value = 'en'
    const w = await mountAs('ROLE_OPERATOR', RuleDialog, { rule: null })
    const body = () => document.body
    expect(body().querySelector('input[name=rule-consecutive]')).toBeNull()
    const vm = w.vm as unknown as { $: { setupState: { form: { condition: string; id: string } } } }
    vm.$.setupState.form.condition = 'CONSECUTIVE_FAILURES'
    vm.$.setupState.form.id = 'r2'
    await flushPromises()
    expect(body().querySelector('input[name=rule-consecutive]')).not.toBeNull()
    expect(body().querySelector('input[name=rule-no-success]')).toBeNull()
    ;(body().querySelector('[data-testid=rule-submit]') as HTMLElement).click()
    await flushPromises()
    const sent = calls.find((c) => c.method === 'POST')?.body as Record<string, unknown>
    expect(sent).toMatchObject({ id: 'r2', condition: 'ALERT_CONDITION_CONSECUTIVE_FAILURES', consecutive_failures: 3 })
    // The refusal is at the channels field (Element shows a form item's `error` under it).
    const errors = w.findAllComponents({ name: 'ElFormItem' }).map((c) => [c.props('label'), c.props('error')])
    expect(errors.filter(([, e]) => e)).toEqual([['Channels', 'give at least one channel']])
    w.unmount()
  })
})
