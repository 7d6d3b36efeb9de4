// SPDX-License-Identifier: Apache-2.0
// The group dialog's fields to and from the API's Group: membership rules are edited one
// per line (CIDRs, hostname globs; a label selector is `key=value, key=value`), and the
// API's field violations (`membership.cidrs[2]`) are shown at the field with the line.
import type { FieldViolation } from './api/client'
import type { Group } from './api/types'

export interface GroupForm {
  name: string
  description: string
  tags: string[]
  cidrs: string
  hostnameGlobs: string
  labelSelectors: string
  priority: number
}

export function emptyGroupForm(): GroupForm {
  return { name: '', description: '', tags: [], cidrs: '', hostnameGlobs: '', labelSelectors: '', priority: 0 }
}

export function formFromGroup(group: Group): GroupForm {
  const m = group.membership ?? {}
  return {
    name: group.name ?? '',
    description: group.description ?? '',
    tags: [...(group.tags ?? [])],
    cidrs: (m.cidrs ?? []).join('\n'),
    hostnameGlobs: (m.hostname_globs ?? []).join('\n'),
    labelSelectors: (m.label_selectors ?? [])
      .map((s) =>
        Object.entries(s.match_labels ?? {})
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => `${k}=${v}`)
          .join(', '),
      )
      .join('\n'),
    priority: m.priority ?? 0,
  }
}

function lines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
}

/** `env=prod, tier=web` -> {env: 'prod', tier: 'web'}; a pair without `=` keeps an empty value
 *  (the API then names the bad label). */
export function parseSelector(line: string): Record<string, string> {
  const labels: Record<string, string> = {}
  for (const pair of line.split(',')) {
    const p = pair.trim()
    if (!p) continue
    const eq = p.indexOf('=')
    if (eq < 0) labels[p] = ''
    else labels[p.slice(0, eq).trim()] = p.slice(eq + 1).trim()
  }
  return labels
}

/** The body of POST /groups (no base) or PUT /groups/{id} (base: the group being edited,
 *  whose id and revision are carried). */
export function groupFromForm(form: GroupForm, base?: Group): Group {
  const cidrs = lines(form.cidrs)
  const hostnameGlobs = lines(form.hostnameGlobs)
  const selectors = lines(form.labelSelectors).map((l) => ({ match_labels: parseSelector(l) }))
  const group: Group = {
    ...(base ?? {}),
    id: base?.id ?? '',
    name: form.name.trim(),
    description: form.description.trim(),
    tags: form.tags.map((t) => t.trim()).filter((t) => t !== ''),
  }
  if (cidrs.length || hostnameGlobs.length || selectors.length || form.priority) {
    group.membership = {
      cidrs,
      hostname_globs: hostnameGlobs,
      label_selectors: selectors,
      priority: form.priority || 0,
    }
  } else {
    delete group.membership
  }
  delete group.created_at_unix_ms
  delete group.updated_at_unix_ms
  delete group.created_by
  return group
}

const FORM_FIELDS: [string, keyof GroupForm][] = [
  ['membership.cidrs', 'cidrs'],
  ['membership.hostname_globs', 'hostnameGlobs'],
  ['membership.label_selectors', 'labelSelectors'],
  ['membership.priority', 'priority'],
  ['membership', 'cidrs'],
  ['description', 'description'],
  ['name', 'name'],
  ['tags', 'tags'],
]

/** The API's violations by form field: `membership.cidrs[1]` "is not a CIDR" -> cidrs:
 *  "line 2: is not a CIDR" (lineLabel formats the line prefix, for i18n). */
export function groupFieldErrors(
  details: FieldViolation[],
  lineLabel: (line: number) => string = (n) => `line ${n}`,
): Partial<Record<keyof GroupForm, string>> {
  const out: Partial<Record<keyof GroupForm, string>> = {}
  for (const d of details) {
    const hit = FORM_FIELDS.find(
      ([path]) => d.field === path || d.field.startsWith(path + '.') || d.field.startsWith(path + '['),
    )
    if (!hit || out[hit[1]]) continue
    const index = /^[a-z_.]+\[(\d+)\]/.exec(d.field)
    out[hit[1]] = index && hit[0] !== 'tags' ? `${lineLabel(Number(index[1]) + 1)}: ${d.reason}` : d.reason
  }
  return out
}
