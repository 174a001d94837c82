/** The app shell: header (sync indicator, signed-in user), routing, notices. */

import type { FerriteClient, Rejection } from '@ferrite/client'
import { Actions, Data } from './data.js'
import { h, replaceChildren } from './dom.js'
import { openClient, signOut, type SignedIn } from './session.js'
import { EditorView } from './views/editor.js'
import { listView } from './views/list.js'
import { SyncIndicator } from './views/sync.js'

/** A rejected write as a sentence for the user. */
export function describeRejection(r: Rejection): string {
  switch (r.code) {
    case 'forbidden':
      return `Your change was not saved: you no longer have access to this pipeline (${r.message}).`
    case 'constraint':
      return `Your change was not saved: it conflicts with the pipeline as others left it (${r.message}).`
    case 'conflict':
      return `Your change was not saved: someone changed this first (${r.message}).`
    default:
      return `Your change was not saved: ${r.message}`
  }
}

export class App {
  readonly data: Data
  readonly actions: Actions
  #main = h('div', { class: 'main' })
  #toasts = h('div', { class: 'toasts', 'aria-live': 'assertive' })
  #editor: EditorView | undefined
  #sync: SyncIndicator
  #scheduled = false

  private constructor(readonly root: HTMLElement, readonly client: FerriteClient, readonly user: SignedIn) {
    this.data = new Data(client)
    this.actions = new Actions(client, this.data, () => user.id)
    this.#sync = new SyncIndicator(client)
    const header = h(
      'header',
      { class: 'app-header' },
      h('a', { class: 'brand', href: '#/' }, h('img', { src: '/icon.svg', alt: '', width: '22', height: '22' }), 'Pipeline editor'),
      this.#sync.el,
      h(
        'div',
        { class: 'me', 'data-testid': 'me', 'data-user-id': user.id },
        h('img', { class: 'avatar small', src: user.avatar_url ?? '', alt: '' }),
        h('span', {}, user.name),
        h('button', { class: 'link small', 'data-testid': 'switch-user', onclick: () => this.signOut() }, 'Switch user'),
      ),
    )
    replaceChildren(root, header, this.#main, this.#toasts)
    client.on('change', () => this.#schedule())
    client.on('rejected', (r) => this.toast(describeRejection(r)))
    window.addEventListener('hashchange', () => this.route())
    this.route()
  }

  static async start(root: HTMLElement, user: SignedIn): Promise<App> {
    return new App(root, await openClient(user), user)
  }

  /** Re-renders once per burst of changes. */
  #schedule(): void {
    if (this.#scheduled) return
    this.#scheduled = true
    queueMicrotask(() => {
      this.#scheduled = false
      this.render()
    })
  }

  route(): void {
    const m = /^#\/p\/([0-9a-f-]{36})$/.exec(location.hash)
    const id = m?.[1]
    if (this.#editor && this.#editor.pipelineId !== id) {
      this.#editor.destroy()
      this.#editor = undefined
    }
    if (id && !this.#editor) {
      this.#editor = new EditorView(this.data, this.actions, this.user, id)
      replaceChildren(this.#main, this.#editor.el)
    }
    this.render()
  }

  render(): void {
    if (this.#editor) this.#editor.render()
    else replaceChildren(this.#main, listView(this.data, this.actions, this.client.isLoaded('teams')))
  }

  toast(message: string): void {
    const t = h('div', { class: 'toast', 'data-testid': 'toast', role: 'alert' }, h('span', {}, message), h('button', { class: 'link', 'aria-label': 'Dismiss', onclick: () => t.remove() }, '×'))
    this.#toasts.append(t)
    setTimeout(() => t.remove(), 20_000)
  }

  signOut(): void {
    this.#editor?.destroy()
    this.client.close()
    signOut()
    location.hash = '#/'
    location.reload()
  }
}
