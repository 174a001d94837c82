/** The dev sign-in: pick one of the seeded users. */

import { h, replaceChildren } from '../dom.js'
import { DevSignInError, devToken, devUsers } from '@ferrite/client'
import type { DevUser, SignedIn } from '../session.js'

/** A failed sign-in request as words: the server's message, or why it could not be asked. */
function reason(e: unknown): string {
  if (e instanceof DevSignInError) return e.message
  return navigator.onLine ? 'the server could not be reached' : 'you are offline, and signing in needs the server'
}

export function signInView(onPick: (u: SignedIn) => void): HTMLElement {
  // Progress and errors show above the users (not as one of their cards), with a way to retry.
  const status = h('div', { class: 'sign-in-status', 'data-testid': 'sign-in-status', 'aria-live': 'polite' })
  const list = h('div', { class: 'user-grid' })
  const el = h(
    'main',
    { class: 'sign-in' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'ferrite dev issues a real token for the person you pick; you see the pipelines of their teams.'),
    status,
    list,
  )
  const failed = (message: string, retry: () => void) =>
    replaceChildren(
      status,
      h('p', { class: 'error', 'data-testid': 'sign-in-error', role: 'alert' }, message),
      h('button', { 'data-testid': 'sign-in-retry', onclick: retry }, 'Try again'),
    )
  const busy = (on: boolean) => {
    for (const b of list.querySelectorAll('button')) b.disabled = on
  }
  const load = () => {
    replaceChildren(status, h('p', { class: 'muted' }, 'Loading users…'))
    replaceChildren(list)
    devUsers<DevUser>().then(
      (users) => {
        replaceChildren(status)
        replaceChildren(list, users.map((u) => userCard(u, pick)))
      },
      (e: unknown) => failed(`Could not list the users: ${reason(e)}`, load),
    )
  }
  // A token is asked for before the choice is kept, so that a refusal shows here.
  const pick = (u: DevUser) => {
    busy(true)
    replaceChildren(status, h('p', { class: 'muted' }, `Signing in as ${u.name}…`))
    devToken(u.id).then(
      () => onPick(u),
      (e: unknown) => {
        busy(false)
        failed(`Could not sign in as ${u.name}: ${reason(e)}`, () => pick(u))
      },
    )
  }
  load()
  return el
}

function userCard(u: DevUser, onPick: (u: DevUser) => void): HTMLElement {
  return h(
    'button',
    { class: 'user-card', 'data-testid': 'user-option', 'data-user-id': u.id, onclick: () => onPick(u) },
    h('img', { class: 'avatar', src: u.avatar_url ?? '', alt: '' }),
    h('span', { class: 'user-name' }, u.name),
    h('span', { class: 'muted small' }, u.teams.length ? u.teams.map((t) => `${t.name} (${t.role})`).join(', ') : 'no team'),
  )
}
