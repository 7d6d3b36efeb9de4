// SPDX-License-Identifier: Apache-2.0
// Chinese by default (the requirements'), English on request; the choice is remembered.
import { createI18n } from 'vue-i18n'
import en from './locales/en'
import zhCN from './locales/zh-CN'

export type Locale = 'zh-CN' | 'en'
export const LOCALES: { value: Locale; label: string }[] = [
  { value: 'zh-CN', label: '中文' },
  { value: 'en', label: 'English' },
]

export function savedLocale(): Locale {
  const saved = typeof localStorage !== 'undefined' ? localStorage.getItem('qf.locale') : null
  return saved === 'en' || saved === 'zh-CN' ? saved : 'zh-CN'
}

export const i18n = createI18n({
  legacy: false,
  locale: savedLocale(),
  fallbackLocale: 'en',
  messages: { en, 'zh-CN': zhCN },
})
