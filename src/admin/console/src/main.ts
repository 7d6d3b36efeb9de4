// SPDX-License-Identifier: Apache-2.0
// The QuartzFlow console: Vue 3, Element Plus, Pinia, vue-router, vue-i18n.
import { createApp } from 'vue'
import { createPinia } from 'pinia'
import ElementPlus from 'element-plus'
import 'element-plus/dist/index.css'
import 'element-plus/theme-chalk/dark/css-vars.css'
import './styles.css'
import App from './App.vue'
import { router } from './router'
import { i18n } from './i18n'
import { applyTheme, usePrefsStore } from './stores/prefs'
import { useAuthStore } from './stores/auth'
import { setUnauthenticatedHandler } from './api/client'

// Marks the first paint of the app for the browser tests' load-time measure.
performance.mark('qf-start')
const app = createApp(App)
const pinia = createPinia()
app.use(pinia).use(i18n).use(ElementPlus).use(router)
const prefs = usePrefsStore()
applyTheme(prefs.theme)
document.documentElement.lang = prefs.locale
const auth = useAuthStore()
setUnauthenticatedHandler(() => auth.expired())
app.mount('#app')
