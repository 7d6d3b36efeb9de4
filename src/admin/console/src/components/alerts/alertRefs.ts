// SPDX-License-Identifier: Apache-2.0
// What the alert pages pick from and name: tasks, groups, agents, channels, rules and
// monitors, loaded on demand (a failed list leaves its picker empty and says why).
import { ref } from 'vue'
import { api } from '../../api/client'
import type { Agent, AlertRule, Channel, GroupSummary, Monitor, Page, TaskSummary } from '../../api/types'

export type RefKind = 'tasks' | 'groups' | 'agents' | 'channels' | 'rules' | 'monitors'

export function useAlertRefs() {
  const tasks = ref<{ id: string; name: string }[]>([])
  const groups = ref<{ id: string; name: string }[]>([])
  const agents = ref<{ id: string; name: string }[]>([])
  const channels = ref<Channel[]>([])
  const rules = ref<AlertRule[]>([])
  const monitors = ref<Monitor[]>([])
  const error = ref('')

  async function load(kinds: RefKind[]) {
    const jobs: Record<RefKind, () => Promise<void>> = {
      tasks: async () => {
        const p = await api.get<Page<TaskSummary>>('/tasks', { page_size: 500 })
        tasks.value = p.items.map((s) => ({ id: s.task.id ?? '', name: s.task.name }))
      },
      groups: async () => {
        const p = await api.get<Page<GroupSummary>>('/groups', { page_size: 500 })
        groups.value = p.items.map((g) => ({ id: g.group.id, name: g.group.name }))
      },
      agents: async () => {
        const p = await api.get<Page<Agent>>('/agents', { page_size: 500 })
        agents.value = p.items.map((a) => ({ id: a.id, name: a.hostname ? `${a.id} (${a.hostname})` : a.id }))
      },
      channels: async () => {
        channels.value = (await api.get<Page<Channel>>('/channels', { page_size: 500 })).items
      },
      rules: async () => {
        rules.value = (await api.get<Page<AlertRule>>('/alert-rules', { page_size: 500 })).items
      },
      monitors: async () => {
        monitors.value = (await api.get<Page<Monitor>>('/monitors', { page_size: 500 })).items
      },
    }
    const results = await Promise.allSettled(kinds.map((k) => jobs[k]()))
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    error.value = failed ? (failed.reason as Error).message : ''
  }

  const taskName = (id: string) => tasks.value.find((t) => t.id === id)?.name ?? id
  const groupName = (id: string) => groups.value.find((g) => g.id === id)?.name ?? id
  return { tasks, groups, agents, channels, rules, monitors, error, load, taskName, groupName }
}
