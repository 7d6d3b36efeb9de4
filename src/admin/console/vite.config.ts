// SPDX-License-Identifier: Apache-2.0
// Vite build of the console (served by qf-coordinator) and Vitest settings.
/// <reference types="vitest" />
import { defineConfig } from 'vite'
import vue from '@vitejs/plugin-vue'

export default defineConfig({
  plugins: [vue()],
  define: {
    // vue-i18n compiles messages without eval (the CSP has no 'unsafe-eval').
    __INTLIFY_JIT_COMPILATION__: true,
    __INTLIFY_DROP_MESSAGE_COMPILER__: false,
    __VUE_I18N_FULL_INSTALL__: true,
    __VUE_I18N_LEGACY_API__: false,
    __INTLIFY_PROD_DEVTOOLS__: false,
  },
  build: {
    target: 'es2020',
    // The module preload polyfill would be an inline script, which the CSP refuses.
    modulePreload: { polyfill: false },
    chunkSizeWarningLimit: 800,
    rollupOptions: {
      output: {
        manualChunks(id: string) {
          if (id.includes('node_modules/echarts') || id.includes('node_modules/zrender')) return 'echarts'
          if (id.includes('node_modules/element-plus') || id.includes('node_modules/@element-plus')) return 'element-plus'
          if (id.includes('node_modules/')) return 'vendor'
          return undefined
        },
      },
    },
  },
  server: {
    // `npm run dev` against a running coordinator: QF_API=http://127.0.0.1:8443 npm run dev
    proxy: { '/api': { target: process.env.QF_API ?? 'http://127.0.0.1:8443', ws: true, changeOrigin: true } },
  },
  test: {
    environment: 'jsdom',
    include: ['tests/unit/**/*.spec.ts'],
  },
})
