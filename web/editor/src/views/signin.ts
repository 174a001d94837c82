/** The dev sign-in: pick one of the seeded users. */

import { h, replaceChildren } from '../dom.js'
import { devUsers, type DevUser, type SignedIn } from '../session.js'

export function signInView(onPick: (u: SignedIn) => void): HTMLElement {
  const list = h('div', { class: 'user-grid' }, h('p', { class: 'muted' }, 'Loading users…'))
  const el = h(
    'main',
    { class: 'sign-in' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'ferrite dev issues a real token for the person you pick; you see the pipelines of their teams.'),
    list,
  )
  devUsers().then(
    (users) => replaceChildren(list, users.map((u) => userCard(u, onPick))),
    (e: Error) =>
      replaceChildren(
        list,
        h('p', { class: 'error' }, navigator.onLine ? `Could not list the users: ${e.message}` : 'You are offline: signing in needs the server.'),
        h('button', { onclick: () => location.reload() }, 'Try again'),
      ),
  )
  return el
}

function userCard(u: DevUser, onPick: (u: SignedIn) => void): HTMLElement {
  return h(
    'button',
    { class: 'user-card', 'data-testid': 'user-option', 'data-user-id': u.id, onclick: () => onPick(u) },
    h('img', { class: 'avatar', src: u.avatar_url ?? '', alt: '' }),
    h('span', { class: 'user-name' }, u.name),
    h('span', { class: 'muted small' }, u.teams.length ? u.teams.map((t) => `${t.name} (${t.role})`).join(', ') : 'no team'),
  )
}
