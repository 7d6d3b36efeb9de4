// SPDX-License-Identifier: Apache-2.0
// The admin API over fetch: `{code:0,data}` answers, ApiError with the API's message and
// its field violations, the session cookie (same origin), and a hook for expired sessions.
export interface FieldViolation {
  field: string
  reason: string
}

export class ApiError extends Error {
  readonly code: number
  readonly error: string
  readonly status: number
  readonly details: FieldViolation[]
  readonly requestId: string
  constructor(status: number, body: Record<string, unknown> | null, fallback: string) {
    super(typeof body?.message === 'string' && body.message ? body.message : fallback)
    this.status = status
    this.code = typeof body?.code === 'number' ? body.code : 0
    this.error = typeof body?.error === 'string' ? body.error : ''
    this.details = Array.isArray(body?.details) ? (body.details as FieldViolation[]) : []
    this.requestId = typeof body?.request_id === 'string' ? body.request_id : ''
  }
  /** The reason for one field (`schedule.cron`), or for any field under it. */
  fieldReason(field: string): string | undefined {
    return this.details.find(
      (d) => d.field === field || d.field.startsWith(field + '.') || d.field.startsWith(field + '['),
    )?.reason
  }
}

export const CODE_UNAUTHENTICATED = 2
export const CODE_TOTP_REQUIRED = 3

type Query = Record<string, string | number | boolean | string[] | undefined | null>

let onUnauthenticated: (() => void) | null = null
/** Called when a request answers UNAUTHENTICATED (the session expired or was revoked). */
export function setUnauthenticatedHandler(handler: (() => void) | null): void {
  onUnauthenticated = handler
}

export function queryString(query?: Query): string {
  if (!query) return ''
  const params = new URLSearchParams()
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') continue
    if (Array.isArray(value)) value.forEach((v) => params.append(key, v))
    else params.append(key, String(value))
  }
  const text = params.toString()
  return text ? '?' + text : ''
}

export async function request<T>(method: string, path: string, body?: unknown, query?: Query): Promise<T> {
  const init: RequestInit = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } }
  if (body !== undefined) {
    init.body = JSON.stringify(body)
    ;(init.headers as Record<string, string>)['Content-Type'] = 'application/json'
  }
  let response: Response
  try {
    response = await fetch('/api/v1' + path + queryString(query), init)
  } catch (e) {
    throw new ApiError(0, null, `network error: ${(e as Error).message}`)
  }
  const text = await response.text()
  let json: Record<string, unknown> | null = null
  try {
    json = text ? JSON.parse(text) : null
  } catch {
    json = null
  }
  if (!response.ok || (json && typeof json.code === 'number' && json.code !== 0)) {
    const error = new ApiError(response.status, json, `${response.status} ${response.statusText || 'error'}`)
    if (error.code === CODE_UNAUTHENTICATED && !path.startsWith('/auth/login') && onUnauthenticated) onUnauthenticated()
    throw error
  }
  return (json?.data ?? null) as T
}

export const api = {
  get: <T>(path: string, query?: Query) => request<T>('GET', path, undefined, query),
  post: <T>(path: string, body: unknown = {}, query?: Query) => request<T>('POST', path, body, query),
  put: <T>(path: string, body: unknown, query?: Query) => request<T>('PUT', path, body, query),
  del: <T>(path: string, query?: Query) => request<T>('DELETE', path, undefined, query),
}

/** protobuf JSON prints int64 as strings: numbers for the console. */
export function num(value: unknown): number {
  if (typeof value === 'number') return value
  if (typeof value === 'string' && value !== '') return Number(value)
  return 0
}

/** `EXECUTION_STATUS_SUCCESS` -> `SUCCESS`. */
export function enumName(value: unknown, prefix: string): string {
  const text = typeof value === 'string' ? value : String(value ?? '')
  return text.startsWith(prefix) ? text.slice(prefix.length) : text
}
