/** The app shell: header (sync indicator, signed-in user), routing, notices. */

import type { FerriteClient, LostChange, Rejection } from '@ferrite/client'
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

/** What a lost change was about, in words: "your rename of this step to “x”". */
function describeMine(lost: LostChange): string {
  const cols = lost.columns
  const mine = lost.mine
  if (lost.shape === 'steps' && cols.length === 1 && cols[0] === 'name') return `your rename to “${String(mine.name)}”`
  if (lost.shape === 'steps' && cols.every((c) => c === 'x' || c === 'y')) return 'your move of this step'
  return `your change to ${cols.join(', ')}`
}

/**
 * A merged write as a sentence for the user: what of theirs was not kept and what the row holds
 * now (read when shown, so it names the value that won), or that the row was deleted meanwhile.
 */
export function describeLoss(lost: LostChange, current: Record<string, unknown> | undefined): string {
  const what = lost.shape === 'steps' ? 'step' : lost.shape === 'connections' ? 'connection' : lost.shape === 'comments' ? 'comment' : 'row'
  if (!current) return `The ${what} you edited offline was deleted by someone else meanwhile; ${describeMine(lost)} was not kept.`
  if (lost.shape === 'steps' && lost.columns.length === 1 && lost.columns[0] === 'name') {
    return `Someone renamed the step to “${String(current.name)}” after your offline rename; yours (“${String(lost.mine.name)}”) was not kept.`
  }
  return `Someone changed this ${what} after your offline edit; ${describeMine(lost)} was not kept.`
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
    client.on('merged', (m) => {
      for (const lost of m.lost) if (lost.shape) this.#conflictNotice(lost)
    })
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

  /**
   * "Yours was not kept", with "Use mine": the user's lost values again, as a new edit (stamped
   * now, so it wins everywhere). Its text follows the row while shown, so it names what won.
   */
  #conflictNotice(lost: LostChange): void {
    const text = h('span', { 'data-testid': 'conflict-text' })
    const current = () => this.client.get(lost.shape, lost.key) as Record<string, unknown> | undefined
    const useMine = h('button', { class: 'secondary small', 'data-testid': 'use-mine' }, 'Use mine')
    const t = h(
      'div',
      { class: 'toast conflict', 'data-testid': 'conflict', role: 'alert' },
      h('div', {}, text, h('div', { class: 'actions' }, useMine)),
      h('button', { class: 'link', 'aria-label': 'Dismiss', onclick: () => close() }, '×'),
    )
    const render = () => {
      const row = current()
      text.textContent = describeLoss(lost, row)
      // A deleted row cannot take the user's values back (the delete wins).
      useMine.hidden = !row || Object.keys(lost.mine).length === 0
    }
    const off = this.client.on('change', (shapes) => shapes.has(lost.shape) && render())
    const close = () => {
      off()
      t.remove()
    }
    useMine.onclick = () => {
      close()
      void this.client.transaction((tx) => tx.update(lost.shape, lost.key, lost.mine))
    }
    render()
    this.#toasts.append(t)
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
