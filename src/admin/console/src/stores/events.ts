// SPDX-License-Identifier: Apache-2.0
// The API's live events (WebSocket /api/v1/events): one connection, listeners by event type,
// reconnection with backoff, and the executions whose output to follow (live logs).
import { defineStore } from 'pinia'

export interface LiveEvent {
  sequence: string
  at_unix_ms: string
  type: string
  execution?: Record<string, unknown>
  agent_state?: Record<string, unknown>
  task_change?: Record<string, unknown>
  log?: {
    execution_id: string
    offset: string | number
    data: string
    /** Where the next output starts, in the agent's bytes (not the data's length when replaced). */
    next_offset?: string | number
    total_bytes: string | number
    eof: boolean
  }
}

type Listener = (event: LiveEvent) => void

export const useEventsStore = defineStore('events', {
  state: () => ({
    connected: false,
    received: 0,
    follow: [] as string[],
  }),
  actions: {
    connect() {
      if (socket && socket.readyState <= WebSocket.OPEN) return
      const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/events`
      socket = new WebSocket(url)
      socket.onopen = () => {
        this.connected = true
        retryDelay = 1000
        this.subscribe()
      }
      socket.onmessage = (message) => {
        let event: LiveEvent
        try {
          event = JSON.parse(String(message.data))
        } catch {
          return
        }
        this.received++
        for (const listener of listeners) listener(event)
      }
      socket.onclose = () => {
        this.connected = false
        socket = null
        if (stopped) return
        reconnectTimer = setTimeout(() => this.connect(), retryDelay)
        retryDelay = Math.min(retryDelay * 2, 15000)
      }
    },
    subscribe() {
      if (!socket || socket.readyState !== WebSocket.OPEN) return
      const types = [
        'EVENT_TYPE_EXECUTION_UPDATED',
        'EVENT_TYPE_AGENT_STATE_CHANGED',
        'EVENT_TYPE_TASK_CHANGED',
        ...(this.follow.length ? ['EVENT_TYPE_EXECUTION_LOG'] : []),
      ]
      socket.send(JSON.stringify({ types, follow_execution_ids: this.follow }))
    },
    /** Streams this execution's output as EXECUTION_LOG events while it runs. */
    followExecution(id: string) {
      if (!this.follow.includes(id)) this.follow = [...this.follow, id].slice(-10)
      this.subscribe()
    },
    unfollowExecution(id: string) {
      this.follow = this.follow.filter((f) => f !== id)
      this.subscribe()
    },
    disconnect() {
      stopped = true
      if (reconnectTimer) clearTimeout(reconnectTimer)
      socket?.close()
      socket = null
    },
    start() {
      stopped = false
      this.connect()
    },
  },
})

let socket: WebSocket | null = null
let retryDelay = 1000
let stopped = false
let reconnectTimer: ReturnType<typeof setTimeout> | null = null
const listeners = new Set<Listener>()

/** Adds a listener; returns its remover (call it in onUnmounted). */
export function onLiveEvent(listener: Listener): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}
