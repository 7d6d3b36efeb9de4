// SPDX-License-Identifier: Apache-2.0
// The operator's choices, kept in this browser: language, theme, time zone for display.
import { defineStore } from 'pinia'
import { i18n, savedLocale, type Locale } from '../i18n'

export type Theme = 'light' | 'dark'

function savedTheme(): Theme {
  const saved = localStorage.getItem('qf.theme')
  if (saved === 'dark' || saved === 'light') return saved
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ? 'dark' : 'light'
}

export function applyTheme(theme: Theme): void {
  document.documentElement.classList.toggle('dark', theme === 'dark')
}

export const usePrefsStore = defineStore('prefs', {
  state: () => ({
    locale: savedLocale() as Locale,
    theme: savedTheme(),
    /** IANA zone for times; '' = the browser's. */
    timeZone: localStorage.getItem('qf.timeZone') ?? '',
  }),
  actions: {
    setLocale(locale: Locale) {
      this.locale = locale
      i18n.global.locale.value = locale
      localStorage.setItem('qf.locale', locale)
      document.documentElement.lang = locale
    },
    setTheme(theme: Theme) {
      this.theme = theme
      localStorage.setItem('qf.theme', theme)
      applyTheme(theme)
    },
    toggleTheme() {
      this.setTheme(this.theme === 'dark' ? 'light' : 'dark')
    },
    setTimeZone(zone: string) {
      this.timeZone = zone
      localStorage.setItem('qf.timeZone', zone)
    },
  },
})
