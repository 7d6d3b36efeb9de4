// SPDX-License-Identifier: Apache-2.0
import { afterEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia } from 'pinia'
import ElementPlus from 'element-plus'
import { i18n } from '../../src/i18n'
import GroupDialog from '../../src/components/GroupDialog.vue'
import { emptyGroupForm, formFromGroup, groupFieldErrors, groupFromForm, parseSelector } from '../../src/groupForm'

const plugins = [createPinia(), i18n, ElementPlus]

// el-dialog teleports its body: fill and click through the document.
async function setValue(selector: string, value: string) {
  const el = document.querySelector(selector) as HTMLInputElement
  el.value = value
  el.dispatchEvent(new Event('input'))
  await flushPromises()
}
async function click(selector: string) {
  ;(document.querySelector(selector) as HTMLElement).click()
  await flushPromises()
}

afterEach(() => {
  vi.unstubAllGlobals()
  document.body.innerHTML = ''
})

describe('group form', () => {
  it('builds membership rules from lines and reads them back', () => {
    const form = {
      ...emptyGroupForm(),
      name: ' web ',
      tags: ['prod', ' '],
      cidrs: '10.1.0.0/16\n\n 10.2.0.0/16 ',
      hostnameGlobs: 'web-*.example.com',
      labelSelectors: 'env=prod, tier=web\nrole=cache',
      priority: 5,
    }
    const group = groupFromForm(form)
    expect(group).toEqual({
      id: '',
      name: 'web',
      description: '',
      tags: ['prod'],
      membership: {
        cidrs: ['10.1.0.0/16', '10.2.0.0/16'],
        hostname_globs: ['web-*.example.com'],
        label_selectors: [{ match_labels: { env: 'prod', tier: 'web' } }, { match_labels: { role: 'cache' } }],
        priority: 5,
      },
    })
    const back = formFromGroup(group)
    expect(back.cidrs).toBe('10.1.0.0/16\n10.2.0.0/16')
    expect(back.labelSelectors).toBe('env=prod, tier=web\nrole=cache')
    expect(back.priority).toBe(5)
  })

  it('carries id and revision on edit, drops output-only fields and empty rules', () => {
    const base = {
      id: 'g1',
      name: 'old',
      revision: '3',
      created_by: 'admin',
      created_at_unix_ms: '1',
      membership: { cidrs: ['10.0.0.0/8'] },
    }
    const group = groupFromForm({ ...formFromGroup(base), cidrs: '', name: 'new' }, base)
    expect(group).toEqual({ id: 'g1', name: 'new', description: '', tags: [], revision: '3' })
  })

  it('parses selectors, keeping a pair without = for the API to name', () => {
    expect(parseSelector('a=1,b = 2 , c')).toEqual({ a: '1', b: '2', c: '' })
  })

  it("maps the API's violations to the field, with the line", () => {
    expect(
      groupFieldErrors([
        { field: 'membership.cidrs[1]', reason: 'is not a CIDR' },
        { field: 'membership.label_selectors[0].match_labels', reason: 'must name at least one label' },
        { field: 'name', reason: 'is taken' },
      ]),
    ).toEqual({
      cidrs: 'line 2: is not a CIDR',
      labelSelectors: 'line 1: must name at least one label',
      name: 'is taken',
    })
  })
})

describe('GroupDialog', () => {
  it("posts a new group with its rules and shows the API's refusal at the field", async () => {
    i18n.global.locale.value = 'en'
    const fetch = vi.fn<(url: string, init?: RequestInit) => Promise<Response>>(() =>
      Promise.resolve(
        new Response(
          JSON.stringify({
            code: 1,
            message: 'invalid group: membership.cidrs[0]: is not a CIDR',
            details: [{ field: 'membership.cidrs[0]', reason: 'is not a CIDR' }],
          }),
          { status: 400 },
        ),
      ),
    )
    vi.stubGlobal('fetch', fetch)
    const w = mount(GroupDialog, { props: { group: null }, global: { plugins }, attachTo: document.body })
    await flushPromises()
    await setValue('input[name="group-name"]', 'web')
    await setValue('textarea[name="group-cidrs"]', '10.1.0.0/33')
    await click('[data-testid="group-submit"]')
    await flushPromises()
    expect(fetch).toHaveBeenCalledTimes(1)
    const [url, init] = fetch.mock.calls[0]
    expect(url).toBe('/api/v1/groups')
    expect(init?.method).toBe('POST')
    expect(JSON.parse(String(init?.body)).membership.cidrs).toEqual(['10.1.0.0/33'])
    // The reason goes to the CIDR field's form item (el-form-item renders it; the e2e sees it).
    const errors = w.findAllComponents({ name: 'ElFormItem' }).map((c) => c.props('error'))
    expect(errors.filter(Boolean)).toEqual(['line 1: is not a CIDR'])
    w.unmount()
  })

  it('puts an edited group to its id', async () => {
    const fetch = vi.fn<(url: string, init?: RequestInit) => Promise<Response>>(() =>
      Promise.resolve(new Response(JSON.stringify({ code: 0, data: { id: 'g1', name: 'web2' } }))),
    )
    vi.stubGlobal('fetch', fetch)
    const w = mount(GroupDialog, {
      props: { group: { id: 'g1', name: 'web', revision: '2' } },
      global: { plugins },
      attachTo: document.body,
    })
    await flushPromises()
    await setValue('input[name="group-name"]', 'web2')
    await click('[data-testid="group-submit"]')
    await flushPromises()
    const [url, init] = fetch.mock.calls[0]
    expect(url).toBe('/api/v1/groups/g1')
    expect(init?.method).toBe('PUT')
    expect(JSON.parse(String(init?.body))).toMatchObject({ id: 'g1', name: 'web2', revision: '2' })
    expect(w.emitted('saved')).toBeTruthy()
    w.unmount()
  })
})
