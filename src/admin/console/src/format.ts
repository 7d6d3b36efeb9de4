// SPDX-License-Identifier: Apache-2.0
// Times, durations and sizes as the console shows them.
import { num } from './api/client'

export function formatTime(unixMs: unknown, timeZone = '', withSeconds = true): string {
  const ms = num(unixMs)
  if (!ms) return '—'
  const options: Intl.DateTimeFormatOptions = {
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: withSeconds ? '2-digit' : undefined,
    hour12: false,
  }
  if (timeZone) options.timeZone = timeZone
  try {
    return new Intl.DateTimeFormat('sv-SE', options).format(new Date(ms))
  } catch {
    return new Date(ms).toISOString()
  }
}

export function formatDuration(msValue: unknown): string {
  const ms = num(msValue)
  if (!ms) return '—'
  if (ms < 1000) return `${ms} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
  const minutes = Math.floor(ms / 60_000)
  const seconds = Math.round((ms % 60_000) / 1000)
  if (minutes < 60) return `${minutes} min ${seconds} s`
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`
}

export function formatBytes(value: unknown): string {
  const bytes = num(value)
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`
}

/** Relative time for recent instants ("12 s ago", "12 秒前"), absolute beyond a day. */
export function formatAgo(unixMs: unknown, now = Date.now(), locale = 'en'): string {
  const ms = num(unixMs)
  if (!ms) return '—'
  const seconds = Math.round((ms - now) / 1000)
  const abs = Math.abs(seconds)
  if (abs >= 86400) return formatTime(ms)
  const rtf = new Intl.RelativeTimeFormat(locale, { numeric: 'always', style: 'short' })
  if (abs < 60) return rtf.format(seconds, 'second')
  if (abs < 3600) return rtf.format(Math.trunc(seconds / 60), 'minute')
  return rtf.format(Math.trunc(seconds / 3600), 'hour')
}

export const STATUS_TYPES: Record<string, 'success' | 'danger' | 'warning' | 'info' | 'primary'> = {
  SUCCESS: 'success',
  FAILURE: 'danger',
  TIMEOUT: 'danger',
  CANCELLED: 'info',
  SKIPPED: 'info',
  MISSED: 'warning',
  RUNNING: 'primary',
  PENDING: 'warning',
  ONLINE: 'success',
  OFFLINE: 'danger',
  SUSPECT: 'warning',
  DRAINING: 'warning',
}
