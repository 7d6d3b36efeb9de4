// SPDX-License-Identifier: Apache-2.0
import { afterEach, describe, expect, it, vi } from 'vitest'
import { api, ApiError, enumName, num, queryString, setUnauthenticatedHandler } from '../../src/api/client'

function reply(status: number, body: unknown) {
  return vi.fn().mockResolvedValue(new Response(JSON.stringify(body), { status }))
}

afterEach(() => {
  vi.unstubAllGlobals()
  setUnauthenticatedHandler(null)
})

describe('api client', () => {
  it('returns the data of a success', async () => {
    const fetch = reply(200, { code: 0, data: { items: [1, 2] } })
    vi.stubGlobal('fetch', fetch)
    await expect(api.get('/tasks', { page: 2, keyword: '' })).resolves.toEqual({ items: [1, 2] })
    expect(fetch.mock.calls[0][0]).toBe('/api/v1/tasks?page=2')
    expect(fetch.mock.calls[0][1].credentials).toBe('same-origin')
  })

  it("throws the API's message with its field violations", async () => {
    vi.stubGlobal(
      'fetch',
      reply(400, {
        code: 1,
        error: 'INVALID_ARGUMENT',
        message: 'invalid task: schedule.cron: minute: 61 is out of range 0-59',
        details: [{ field: 'schedule.cron', reason: 'minute: 61 is out of range 0-59' }],
        request_id: 'r1',
      }),
    )
    const error = (await api.post('/tasks', { name: 'x' }).catch((e) => e)) as ApiError
    expect(error).toBeInstanceOf(ApiError)
    expect(error.message).toBe('invalid task: schedule.cron: minute: 61 is out of range 0-59')
    expect(error.status).toBe(400)
    expect(error.fieldReason('schedule')).toBe('minute: 61 is out of range 0-59')
    expect(error.fieldReason('schedule.cron')).toBe('minute: 61 is out of range 0-59')
    expect(error.fieldReason('name')).toBeUndefined()
  })

  it('reports an expired session once to the handler, but not for a failed login', async () => {
    const handler = vi.fn()
    setUnauthenticatedHandler(handler)
    vi.stubGlobal('fetch', reply(401, { code: 2, message: 'session expired' }))
    await expect(api.get('/tasks')).rejects.toThrow('session expired')
    await expect(api.post('/auth/login', {})).rejects.toThrow()
    expect(handler).toHaveBeenCalledTimes(1)
  })

  it('says a network failure is one', async () => {
    vi.stubGlobal('fetch', vi.fn().mockRejectedValue(new TypeError('Failed to fetch')))
    await expect(api.get('/tasks')).rejects.toThrow('network error: Failed to fetch')
  })

  it('reads int64 strings and enum names', () => {
    expect(num('1733270400000')).toBe(1733270400000)
    expect(num(undefined)).toBe(0)
    expect(enumName('EXECUTION_STATUS_SUCCESS', 'EXECUTION_STATUS_')).toBe('SUCCESS')
    expect(queryString({ status: ['FAILURE', 'MISSED'], empty: '' })).toBe('?status=FAILURE&status=MISSED')
  })
})
