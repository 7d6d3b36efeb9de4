// SPDX-License-Identifier: Apache-2.0
import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia } from 'pinia'
import { createMemoryHistory, createRouter } from 'vue-router'
import ElementPlus from 'element-plus'
import { i18n } from '../../src/i18n'
import RunsView from '../../src/views/RunsView.vue'
import TasksView from '../../src/views/TasksView.vue'

afterEach(() => {
  vi.unstubAllGlobals()
  document.body.innerHTML = ''
})

/** Every list answers empty, except the group list: refused with the API's message. */
function groupsRefused() {
  vi.stubGlobal('fetch', (url: string) =>
    Promise.resolve(
      String(url).includes('/api/v1/groups')
        ? new Response(JSON.stringify({ code: 7, message: 'permission denied: groups.list' }), { status: 403 })
        : new Response(JSON.stringify({ code: 0, data: { items: [], total: 0 } })),
    ),
  )
}

async function mountView(view: object) {
  const router = createRouter({ history: createMemoryHistory(), routes: [{ path: '/:p(.*)*', component: view }] })
  await router.push('/')
  const w = mount(view, { global: { plugins: [createPinia(), i18n, ElementPlus, router] }, attachTo: document.body })
  await flushPromises()
  return w
}

describe('group list failures', () => {
  it("the runs page shows the API's message when the groups cannot be listed", async () => {
    groupsRefused()
    const w = await mountView(RunsView)
    expect(w.find('[data-testid="groups-error"]').text()).toContain('permission denied: groups.list')
    w.unmount()
  })

  it("the tasks page shows the API's message when the groups cannot be listed", async () => {
    groupsRefused()
    const w = await mountView(TasksView)
    expect(document.body.textContent).toContain('permission denied: groups.list')
    w.unmount()
  })
})
