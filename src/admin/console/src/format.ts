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

/** Relative time for recent instants ("12 s ago"), absolute beyond a day. */
export function formatAgo(unixMs: unknown, now = Date.now()): string {
  const ms = num(unixMs)
  if (!ms) return '—'
  const seconds = Math.round((now - ms) / 1000)
  if (seconds < 0) return `in ${-seconds} s`
  if (seconds < 60) return `${seconds} s ago`
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`
  return formatTime(ms)
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
