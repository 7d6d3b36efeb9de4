// SPDX-License-Identifier: Apache-2.0
// Routes; every page but the login is loaded on demand and needs a session.
import { createRouter, createWebHistory, type RouteRecordRaw } from 'vue-router'
import { useAuthStore } from './stores/auth'

const routes: RouteRecordRaw[] = [
  { path: '/login', name: 'login', component: () => import('./views/LoginView.vue'), meta: { public: true } },
  {
    path: '/',
    component: () => import('./views/MainLayout.vue'),
    children: [
      { path: '', name: 'dashboard', component: () => import('./views/DashboardView.vue') },
      { path: 'tasks', name: 'tasks', component: () => import('./views/TasksView.vue') },
      { path: 'tasks/new', name: 'task-new', component: () => import('./views/TaskFormView.vue') },
      { path: 'tasks/:id/edit', name: 'task-edit', component: () => import('./views/TaskFormView.vue') },
      { path: 'runs', name: 'runs', component: () => import('./views/RunsView.vue') },
      { path: 'runs/:id', name: 'run', component: () => import('./views/RunDetailView.vue') },
      { path: 'groups', name: 'groups', component: () => import('./views/GroupsView.vue') },
      { path: 'stats', name: 'stats', component: () => import('./views/StatsView.vue') },
      { path: 'alerts/:tab?', name: 'alerts', component: () => import('./views/AlertsView.vue') },
      { path: 'settings', name: 'settings', component: () => import('./views/SettingsView.vue') },
    ],
  },
  { path: '/:rest(.*)*', redirect: '/' },
]

export const router = createRouter({ history: createWebHistory(), routes })

router.beforeEach(async (to) => {
  const auth = useAuthStore()
  if (!auth.checked) {
    try {
      await auth.check()
    } catch {
      // API unreachable: the login page says so when it tries.
    }
  }
  if (!to.meta.public && !auth.loggedIn) return { name: 'login', query: { redirect: to.fullPath } }
  if (to.name === 'login' && auth.loggedIn) return { path: '/' }
  return true
})
