// SPDX-License-Identifier: Apache-2.0
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import ElementPlus from 'element-plus'
import { i18n } from '../../src/i18n'
import { onLiveEvent, useEventsStore } from '../../src/stores/events'
import LogViewer from '../../src/components/LogViewer.vue'

/** A WebSocket double: records what is sent; the test opens, feeds and closes it. */
class FakeSocket {
  static last: FakeSocket | null = null
  static OPEN = 1
  readyState = 0
  sent: string[] = []
  onopen: (() => void) | null = null
  onmessage: ((m: { data: string }) => void) | null = null
  onclose: (() => void) | null = null
  constructor(readonly url: string) {
    FakeSocket.last = this
  }
  send(text: string) {
    this.sent.push(text)
  }
  close() {
    this.readyState = 3
    this.onclose?.()
  }
  open() {
    this.readyState = 1
    this.onopen?.()
  }
  receive(event: unknown) {
    this.onmessage?.({ data: JSON.stringify(event) })
  }
}

beforeEach(() => {
  vi.useFakeTimers()
  vi.stubGlobal('WebSocket', FakeSocket)
  setActivePinia(createPinia())
})
afterEach(() => {
  useEventsStore().disconnect()
  vi.unstubAllGlobals()
  vi.useRealTimers()
})

describe('events store', () => {
  it('subscribes on open, follows executions for their logs, and hands events to listeners', () => {
    const events = useEventsStore()
    events.start()
    const socket = FakeSocket.last!
    expect(socket.url).toBe(`ws://${location.host}/api/v1/events`)
    socket.open()
    expect(events.connected).toBe(true)
    expect(JSON.parse(socket.sent[0]).types).not.toContain('EVENT_TYPE_EXECUTION_LOG')
    events.followExecution('t:1:a')
    const follow = JSON.parse(socket.sent[1])
    expect(follow.follow_execution_ids).toEqual(['t:1:a'])
    expect(follow.types).toContain('EVENT_TYPE_EXECUTION_LOG')
    const seen: string[] = []
    const stop = onLiveEvent((e) => seen.push(e.type))
    socket.receive({ type: 'EVENT_TYPE_TASK_CHANGED', task_change: {} })
    stop()
    socket.receive({ type: 'EVENT_TYPE_TASK_CHANGED', task_change: {} })
    expect(seen).toEqual(['EVENT_TYPE_TASK_CHANGED'])
  })

  it('reconnects after the connection drops, waiting longer each time', () => {
    const events = useEventsStore()
    events.start()
    const first = FakeSocket.last!
    first.open()
    first.close()
    expect(events.connected).toBe(false)
    vi.advanceTimersByTime(999)
    expect(FakeSocket.last).toBe(first)
    vi.advanceTimersByTime(1)
    expect(FakeSocket.last).not.toBe(first)
    FakeSocket.last!.close()
    vi.advanceTimersByTime(1999)
    const second = FakeSocket.last
    vi.advanceTimersByTime(1)
    expect(FakeSocket.last).not.toBe(second)
  })
})

describe('LogViewer live', () => {
  it('appends live output at the right offset, ignores repeats, and holds it while paused', async () => {
    vi.useRealTimers()
    vi.stubGlobal('fetch', () =>
      Promise.resolve(
        new Response(
          JSON.stringify({
            code: 0,
            data: { chunk: { offset: 0, data: 'a\n', total_bytes: 2, eof: false }, source: 'LOG_SOURCE_AGENT' },
          }),
        ),
      ),
    )
    const events = useEventsStore()
    events.start()
    FakeSocket.last!.open()
    const w = mount(LogViewer, {
      props: { executionId: 'x:1:a', running: true },
      global: { plugins: [i18n, ElementPlus] },
    })
    await flushPromises()
    const log = () => w.find('[data-testid=log-text]').text()
    expect(log()).toBe('a')
    const chunk = (offset: number, data: string) =>
      FakeSocket.last!.receive({
        type: 'EVENT_TYPE_EXECUTION_LOG',
        log: { execution_id: 'x:1:a', offset, data, total_bytes: offset + data.length, eof: false },
      })
    chunk(2, 'b\n')
    chunk(2, 'b\n')
    await w.vm.$nextTick()
    expect(log()).toBe('a\nb')
    await w.find('[data-testid=log-pause]').trigger('click')
    chunk(4, 'c\n')
    await w.vm.$nextTick()
    expect(log()).toBe('a\nb')
    await w.find('[data-testid=log-pause]').trigger('click')
    await w.vm.$nextTick()
    expect(log()).toBe('a\nb\nc')
    w.unmount()
  })

  it('places live output by the next_offset the server gives, not by the text (bytes that were not UTF-8)', async () => {
    vi.useRealTimers()
    vi.stubGlobal('fetch', () =>
      Promise.resolve(
        new Response(
          JSON.stringify({
            code: 0,
            data: { chunk: { offset: 0, data: '', total_bytes: 0, eof: false }, source: 'LOG_SOURCE_AGENT' },
          }),
        ),
      ),
    )
    const events = useEventsStore()
    events.start()
    FakeSocket.last!.open()
    const w = mount(LogViewer, {
      props: { executionId: 'x:2:a', running: true },
      global: { plugins: [i18n, ElementPlus] },
    })
    await flushPromises()
    const log = () => w.find('[data-testid=log-text]').text()
    const chunk = (offset: number, next: number, data: string) =>
      FakeSocket.last!.receive({
        type: 'EVENT_TYPE_EXECUTION_LOG',
        log: { execution_id: 'x:2:a', offset, next_offset: next, data, total_bytes: next, eof: false },
      })
    // 4 raw bytes (a, 0xFF, b, newline): 0xFF arrives as U+FFFD, 3 bytes of UTF-8.
    chunk(0, 4, 'a\ufffdb\n')
    chunk(4, 6, 'c\n')
    await w.vm.$nextTick()
    expect(log()).toBe('a\ufffdb\nc')
    w.unmount()
  })
})
