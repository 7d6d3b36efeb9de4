// SPDX-License-Identifier: Apache-2.0
// Who is logged in (session cookie set by the API), their role, and an expired session:
// the layout shows a sign-in dialog over the page instead of leaving it (forms keep their input).
import { defineStore } from 'pinia'
import { api, ApiError, CODE_TOTP_REQUIRED, CODE_UNAUTHENTICATED } from '../api/client'
import type { User } from '../api/types'

const RANK: Record<string, number> = { ROLE_VIEWER: 1, ROLE_OPERATOR: 2, ROLE_ADMIN: 3 }

export const useAuthStore = defineStore('auth', {
  state: () => ({
    user: null as User | null,
    checked: false,
    sessionExpired: false,
  }),
  getters: {
    loggedIn: (s) => s.user !== null,
    rank: (s) => (s.user ? (RANK[s.user.role] ?? 0) : 0),
    /** Operators and admins change tasks, groups, agents and runs. */
    canWrite(): boolean {
      return this.rank >= 2
    },
    isAdmin(): boolean {
      return this.rank >= 3
    },
  },
  actions: {
    /** Asks the API who the session cookie belongs to (once per page load). */
    async check(): Promise<boolean> {
      try {
        this.user = await api.get<User>('/auth/me')
      } catch (e) {
        if (!(e instanceof ApiError) || e.code !== CODE_UNAUTHENTICATED) throw e
        this.user = null
      }
      this.checked = true
      return this.user !== null
    },
    /** Resolves 'ok', or 'totp' when the account needs its second factor; throws ApiError. */
    async login(username: string, password: string, totpCode = ''): Promise<'ok' | 'totp'> {
      try {
        const body: Record<string, string> = { username, password }
        if (totpCode) body.totp_code = totpCode
        const r = await api.post<{ user: User }>('/auth/login', body)
        this.user = r.user
        this.checked = true
        this.sessionExpired = false
        return 'ok'
      } catch (e) {
        if (e instanceof ApiError && e.code === CODE_TOTP_REQUIRED) return 'totp'
        throw e
      }
    },
    async logout(): Promise<void> {
      try {
        await api.post('/auth/logout')
      } finally {
        this.user = null
      }
    },
    expired(): void {
      if (this.user) this.sessionExpired = true
    },
  },
})
