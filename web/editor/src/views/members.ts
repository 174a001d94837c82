/**
 * The members of the pipeline's team, with their roles. An owner manages the others from here:
 * adds people, changes roles, removes members (the server's write rule on team_members lets
 * only owners do so, and not to themselves). Everyone else sees the list.
 */

import { h, replaceChildren } from '../dom.js'
import type { Actions, Data, Pipeline, Role } from '../data.js'

const ROLES: Role[] = ['owner', 'editor', 'viewer']

export class MembersPanel {
  readonly el = h('section', { class: 'panel members', 'data-testid': 'members' })
  /** What the panel shows, to rebuild it only when that changes (not on every cursor move). */
  #shown = ''

  constructor(
    private readonly data: Data,
    private readonly actions: Actions,
    private readonly me: () => string,
  ) {}

  update(p: Pipeline): void {
    const team = this.data.teams().find((t) => t.id === p.team_id)
    const members = this.data.members(p.team_id)
    const owner = this.data.role(p.team_id, this.me()) === 'owner'
    const shown = JSON.stringify([team?.name, owner, members, this.data.users().map((u) => [u.id, u.name])])
    if (shown === this.#shown) return
    this.#shown = shown
    const roleSelect = (value: Role, onchange: (r: Role) => void, testid: string) => {
      const sel = h('select', { 'data-testid': testid, 'aria-label': 'Role' }, ROLES.map((r) => h('option', { value: r }, r))) as HTMLSelectElement
      sel.value = value
      sel.onchange = () => onchange(sel.value as Role)
      return sel
    }
    const rows = members.map((m) => {
      const u = this.data.user(m.user_id)
      const self = m.user_id === this.me()
      return h(
        'li',
        { class: 'member', 'data-testid': 'member', 'data-user-id': m.user_id, 'data-role': m.role },
        h('img', { class: 'avatar small', src: u?.avatar_url ?? '', alt: '' }),
        h('span', { class: 'name' }, u?.name ?? 'Someone', self ? ' (you)' : ''),
        owner && !self
          ? [
              roleSelect(m.role, (r) => void this.actions.setRole(m.team_id, m.user_id, r), 'member-role'),
              h('button', { class: 'link small', 'data-testid': 'remove-member', onclick: () => void this.actions.removeMember(m.team_id, m.user_id) }, 'Remove'),
            ]
          : h('span', { class: 'muted small', 'data-testid': 'member-role-text' }, m.role),
      )
    })
    let add: HTMLElement | null = null
    if (owner) {
      const inTeam = new Set(members.map((m) => m.user_id))
      const candidates = this.data.users().filter((u) => !inTeam.has(u.id)).sort((a, b) => a.name.localeCompare(b.name))
      const who = h('select', { 'data-testid': 'add-member-user', 'aria-label': 'Person to add' }, h('option', { value: '' }, candidates.length ? 'Add someone…' : 'Everyone is in'), candidates.map((u) => h('option', { value: u.id }, u.name))) as HTMLSelectElement
      let role: Role = 'editor'
      add = h(
        'div',
        { class: 'row' },
        who,
        roleSelect(role, (r) => (role = r), 'add-member-role'),
        h('button', { class: 'small', 'data-testid': 'add-member', onclick: () => who.value && void this.actions.addMember(p.team_id, who.value, role) }, 'Add'),
      )
    }
    replaceChildren(this.el, h('h3', {}, `Team ${team?.name ?? ''}`), h('ul', {}, rows), add)
  }
}
