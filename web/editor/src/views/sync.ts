/**
 * The sync indicator from the seed documents: "All changes saved", "Syncing…", "Working
 * offline" with "N pending", "Sync error" with a Retry button (and when the next automatic
 * attempt is due).
 */

import type { FerriteClient, SyncStatus } from '@ferrite/client'
import { h, replaceChildren } from '../dom.js'

export class SyncIndicator {
  readonly el = h('div', { class: 'sync', 'data-testid': 'sync-status', role: 'status', 'aria-live': 'polite' })
  #timer: ReturnType<typeof setInterval> | undefined
  #off: () => void

  constructor(private readonly client: FerriteClient) {
    this.#off = client.on('status', (s) => this.render(s))
    this.render(client.status)
  }

  render(s: SyncStatus = this.client.status): void {
    this.el.dataset.state = s.state
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = undefined
    switch (s.state) {
      case 'synced':
        replaceChildren(this.el, h('span', { class: 'sync-icon ok', 'aria-hidden': 'true' }, '✓'), h('span', { class: 'sync-text' }, 'All changes saved'))
        break
      case 'syncing':
        replaceChildren(this.el, h('span', { class: 'sync-icon spin', 'aria-hidden': 'true' }, '↻'), h('span', { class: 'sync-text' }, 'Syncing…'))
        break
      case 'offline':
        replaceChildren(
          this.el,
          h('span', { class: 'sync-icon', 'aria-hidden': 'true' }, '☁'),
          h('span', { class: 'sync-text' }, 'Working offline'),
          s.pending > 0 ? h('span', { class: 'sync-pending', 'data-testid': 'sync-pending' }, `${s.pending} pending`) : null,
        )
        break
      case 'error': {
        const next = h('span', { class: 'sync-next' })
        const tick = () => {
          const secs = Math.ceil(Math.max(0, s.retryAt - Date.now()) / 1000)
          next.textContent = secs > 0 ? `retrying in ${secs} s` : 'retrying…'
        }
        tick()
        this.#timer = setInterval(tick, 1000)
        replaceChildren(
          this.el,
          h('span', { class: 'sync-icon', 'aria-hidden': 'true' }, '⚠'),
          h('span', { class: 'sync-text', title: s.reason }, 'Sync error'),
          s.pending > 0 ? h('span', { class: 'sync-pending', 'data-testid': 'sync-pending' }, `${s.pending} pending`) : null,
          next,
          h('button', { class: 'link', 'data-testid': 'sync-retry', onclick: () => this.client.retryNow() }, 'Retry'),
        )
        this.el.title = s.reason
        return
      }
    }
    this.el.title = ''
  }

  destroy(): void {
    this.#off()
    if (this.#timer) clearInterval(this.#timer)
  }
}
