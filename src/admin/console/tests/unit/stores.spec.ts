// SPDX-License-Identifier: Apache-2.0
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { useAuthStore } from '../../src/stores/auth'
import { usePrefsStore } from '../../src/stores/prefs'
import { i18n } from '../../src/i18n'

function reply(status: number, body: unknown) {
  return Promise.resolve(new Response(JSON.stringify(body), { status }))
}

beforeEach(() => {
  setActivePinia(createPinia())
  localStorage.clear()
  vi.unstubAllGlobals()
})

describe('auth store', () => {
  it('logs in and knows the role', async () => {
    vi.stubGlobal('fetch', () => reply(200, { code: 0, data: { user: { username: 'ops', role: 'ROLE_OPERATOR' } } }))
    const auth = useAuthStore()
    await expect(auth.login('ops', 'pw')).resolves.toBe('ok')
    expect(auth.loggedIn).toBe(true)
    expect(auth.canWrite).toBe(true)
    expect(auth.isAdmin).toBe(false)
  })

  it('asks for the second factor when the API wants one', async () => {
    const fetch = vi.fn(() => reply(401, { code: 3, message: 'a TOTP code is required' }))
    vi.stubGlobal('fetch', fetch)
    const auth = useAuthStore()
    await expect(auth.login('admin', 'pw')).resolves.toBe('totp')
    expect(auth.loggedIn).toBe(false)
    vi.stubGlobal('fetch', () => reply(200, { code: 0, data: { user: { username: 'admin', role: 'ROLE_ADMIN' } } }))
    await expect(auth.login('admin', 'pw', '123456')).resolves.toBe('ok')
    expect(auth.isAdmin).toBe(true)
  })

  it('a viewer cannot write', async () => {
    vi.stubGlobal('fetch', () => reply(200, { code: 0, data: { username: 'v', role: 'ROLE_VIEWER' } }))
    const auth = useAuthStore()
    await auth.check()
    expect(auth.loggedIn).toBe(true)
    expect(auth.canWrite).toBe(false)
  })

  it('no session: check() answers false; an expiry while logged in raises the dialog', async () => {
    vi.stubGlobal('fetch', () => reply(401, { code: 2, message: 'not logged in' }))
    const auth = useAuthStore()
    await expect(auth.check()).resolves.toBe(false)
    auth.expired()
    expect(auth.sessionExpired).toBe(false)
    auth.user = { username: 'x', role: 'ROLE_VIEWER' } as never
    auth.expired()
    expect(auth.sessionExpired).toBe(true)
  })
})

describe('prefs store', () => {
  it('switches language and theme and remembers them', () => {
    const prefs = usePrefsStore()
    expect(prefs.locale).toBe('zh-CN')
    prefs.setLocale('en')
    expect(i18n.global.locale.value).toBe('en')
    expect(localStorage.getItem('qf.locale')).toBe('en')
    prefs.setTheme('dark')
    expect(document.documentElement.classList.contains('dark')).toBe(true)
    prefs.toggleTheme()
    expect(document.documentElement.classList.contains('dark')).toBe(false)
    expect(localStorage.getItem('qf.theme')).toBe('light')
  })
})
