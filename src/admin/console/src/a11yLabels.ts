// SPDX-License-Identifier: Apache-2.0
// Accessible names for controls Element Plus renders without one (axe-core's `label` rule):
// a table's selection checkboxes and a pagination's page-size select. `v-a11y-labels` on the
// table or the pagination names them, again whenever their rows are re-rendered.
import type { Directive } from 'vue'

export interface ControlLabels {
  selectAll?: string
  selectRow?: string
  pageSize?: string
}

function name(input: Element, label: string | undefined) {
  if (label && input.getAttribute('aria-label') !== label) input.setAttribute('aria-label', label)
}

function apply(el: HTMLElement, labels: ControlLabels) {
  el.querySelectorAll('.el-table-column--selection input[type=checkbox]').forEach((input) =>
    name(input, input.closest('thead') ? labels.selectAll : labels.selectRow),
  )
  el.querySelectorAll('.el-pagination__sizes input').forEach((input) => name(input, labels.pageSize))
}

/** The names in the console's language. */
export function controlLabels(t: (key: string) => string): ControlLabels {
  return { selectAll: t('common.selectAll'), selectRow: t('common.selectRow'), pageSize: t('common.pageSize') }
}

const watched = new WeakMap<HTMLElement, { observer: MutationObserver; labels: ControlLabels }>()

export const vA11yLabels: Directive<HTMLElement, ControlLabels> = {
  mounted(el, binding) {
    // Only added nodes are watched, so the attributes set here do not wake it again.
    const observer = new MutationObserver(() => apply(el, watched.get(el)?.labels ?? {}))
    observer.observe(el, { childList: true, subtree: true })
    watched.set(el, { observer, labels: binding.value })
    apply(el, binding.value)
  },
  updated(el, binding) {
    const entry = watched.get(el)
    if (entry) entry.labels = binding.value
    apply(el, binding.value)
  },
  unmounted(el) {
    watched.get(el)?.observer.disconnect()
    watched.delete(el)
  },
}
