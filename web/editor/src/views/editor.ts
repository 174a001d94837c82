/** The editor of one pipeline: toolbar, canvas, and the side panels; presence in its room. */

import type { PresenceRoom } from '@ferrite/client'
import { h, replaceChildren } from '../dom.js'
import type { Actions, Data, Pipeline } from '../data.js'
import type { SignedIn } from '../session.js'
import { Canvas, type RemotePerson } from './canvas.js'
import { HistoryPanel } from './history.js'
import { Inspector } from './inspector.js'
import { MembersPanel } from './members.js'
import { CommentsPanel, VersionsPanel } from './panels.js'

export class EditorView {
  readonly el = h('main', { class: 'editor' })
  #selected: string | null = null
  #selectedConnection: string | null = null
  #canvas: Canvas
  #inspector: Inspector
  #history: HistoryPanel
  #comments: CommentsPanel
  #versions: VersionsPanel
  #members: MembersPanel
  #addStepButton: HTMLElement
  #readOnlyBadge = h('span', { class: 'badge', 'data-testid': 'read-only', title: 'You are a viewer of this team: you can look, not edit.' }, 'View only')
  /** The pipeline's name while it was there (to say which one went away). */
  #lastName: string | undefined
  /** Whether the user may edit (owner or editor of the pipeline's team). */
  #canEdit = false
  #title = h('h1', { class: 'pipeline-title', 'data-testid': 'pipeline-title' })
  #people = h('div', { class: 'people', 'data-testid': 'presence' })
  #body = h('div', { class: 'editor-body' })
  #missing = h('div', { class: 'missing' })
  /** The presence room, while this page is in it. */
  #room: PresenceRoom | undefined
  #offRoom: () => void = () => {}
  #me: SignedIn
  #onKey: (e: KeyboardEvent) => void
  #onPageHide: () => void
  #onPageShow: (e: PageTransitionEvent) => void

  constructor(
    private readonly data: Data,
    private readonly actions: Actions,
    me: SignedIn,
    readonly pipelineId: string,
  ) {
    this.#me = me
    this.#canvas = new Canvas({
      select: (id) => this.#select(id),
      selectConnection: (id) => {
        this.#selectedConnection = id
        this.#selected = null
        this.#room?.update({ selected: null })
        this.render()
      },
      move: (id, x, y) => this.#canEdit && void this.actions.moveStep(id, x, y),
      connect: (from, to) => {
        if (!this.#canEdit) return
        const p = this.data.pipeline(this.pipelineId)
        if (p && !this.data.connections(p.id).some((c) => c.from_step_id === from && c.to_step_id === to)) void this.actions.connect(p, from, to)
      },
      cursor: (at) => this.#room?.update({ cursor: at }),
    })
    this.#inspector = new Inspector(actions, () => this.#select(null))
    this.#history = new HistoryPanel(data)
    this.#comments = new CommentsPanel(data, actions, () => this.#select(null))
    this.#versions = new VersionsPanel(data, actions)
    this.#members = new MembersPanel(data, actions, () => me.id)
    this.#addStepButton = h('button', { 'data-testid': 'add-step', onclick: () => void this.#addStep() }, '+ Add step')
    this.el.append(
      h('div', { class: 'toolbar' }, h('a', { href: '#/', class: 'back', 'data-testid': 'back' }, '← Pipelines'), this.#title, this.#addStepButton, this.#readOnlyBadge, this.#canvas.controls, this.#people),
      this.#body,
    )
    replaceChildren(this.#body, this.#canvas.el, this.#side())

    this.#joinRoom()
    // A closed tab (or one navigated away) leaves the room at once rather than lingering for the
    // server's TTL: the leave is sent with keepalive, so it outlives the page. A page kept in the
    // back/forward cache left too, and joins again when it is shown.
    this.#onPageHide = () => this.#leaveRoom()
    this.#onPageShow = (e) => {
      if (e.persisted) {
        this.#joinRoom()
        this.render()
      }
    }
    window.addEventListener('pagehide', this.#onPageHide)
    window.addEventListener('pageshow', this.#onPageShow)
    this.#onKey = (e) => {
      const t = e.target as HTMLElement
      if (t.closest('input, textarea, select')) return
      if (e.key !== 'Delete' && e.key !== 'Backspace') return
      if (!this.#canEdit) return
      if (this.#selected) {
        void this.actions.deleteStep(this.#selected)
        this.#select(null)
      } else if (this.#selectedConnection) {
        void this.actions.disconnect(this.#selectedConnection)
        this.#selectedConnection = null
      }
    }
    document.addEventListener('keydown', this.#onKey)
  }

  #joinRoom(): void {
    if (this.#room) return
    const room = this.data.client.presence(`pipelines:${this.pipelineId}`)
    this.#room = room
    this.#offRoom = room.events.on('change', () => this.render())
    const me = this.#me
    room.join({ user_id: me.id, name: me.name, color: me.color, avatar_url: me.avatar_url, cursor: null, selected: this.#selected })
  }

  #leaveRoom(): void {
    this.#offRoom()
    this.#offRoom = () => {}
    this.#room = undefined
    this.data.client.leavePresence(`pipelines:${this.pipelineId}`)
  }

  #select(id: string | null): void {
    this.#selected = id
    this.#selectedConnection = null
    this.#room?.update({ selected: id })
    this.render()
  }

  async #addStep(): Promise<void> {
    const p = this.data.pipeline(this.pipelineId)
    if (!p) return
    // Where it can be seen: a free place in the part of the canvas in view.
    const id = await this.actions.addStep(p, this.#canvas.freeSpot())
    this.#select(id)
    this.#canvas.reveal(id)
  }

  #others(): RemotePerson[] {
    return (this.#room?.others ?? []).map((m) => {
      const s = m.state as { user_id?: string; name?: string; color?: string; cursor?: { x: number; y: number } | null; selected?: string | null }
      const user = this.data.user(s.user_id ?? m.subject)
      return {
        key: m.member,
        userId: s.user_id ?? m.subject ?? m.member,
        name: user?.name ?? s.name ?? 'Someone',
        color: user?.color ?? s.color ?? '#64748b',
        cursor: s.cursor ?? null,
        selected: s.selected ?? null,
      }
    })
  }

  #side(): HTMLElement {
    return h('aside', { class: 'side' }, this.#inspector.el, this.#history.el, this.#comments.el, this.#versions.el, this.#members.el)
  }

  render(): void {
    const p: Pipeline | undefined = this.data.pipeline(this.pipelineId)
    if (!p) {
      this.#title.textContent = ''
      // Gone while open: the team membership was removed (the read rule follows it live) or
      // the pipeline was deleted. Say which pipeline, and that nothing of it stays here.
      const gone = this.#lastName !== undefined
      replaceChildren(
        this.#missing,
        gone
          ? h('p', { 'data-testid': 'pipeline-missing', 'data-reason': 'removed' }, `You no longer have access to “${this.#lastName}”: you were removed from its team, or it was deleted. `, h('a', { href: '#/' }, 'Back to the pipelines'))
          : this.data.client.isLoaded('pipelines')
            ? h('p', { 'data-testid': 'pipeline-missing' }, 'This pipeline is not available: it was deleted, or you are not in its team. ', h('a', { href: '#/' }, 'Back to the pipelines'))
            : h('p', { class: 'muted' }, 'Loading…'),
      )
      if (this.#body.firstChild !== this.#missing) replaceChildren(this.#body, this.#missing)
      this.#addStepButton.hidden = true
      this.#readOnlyBadge.hidden = true
      return
    }
    this.#lastName = p.name
    if (this.#body.firstChild === this.#missing) {
      replaceChildren(this.#body, this.#canvas.el, this.#side())
    }
    const role = this.data.role(p.team_id, this.#me.id)
    this.#canEdit = role === 'owner' || role === 'editor'
    this.#addStepButton.hidden = !this.#canEdit
    this.#readOnlyBadge.hidden = this.#canEdit
    this.#canvas.readOnly = !this.#canEdit
    this.el.dataset.role = role ?? 'none'
    this.#title.textContent = p.name
    const steps = this.data.steps(p.id)
    const connections = this.data.connections(p.id)
    if (this.#selected && !steps.some((s) => s.id === this.#selected)) this.#selected = null
    if (this.#selectedConnection && !connections.some((c) => c.id === this.#selectedConnection)) this.#selectedConnection = null
    const others = this.#others()
    this.#canvas.update(steps, connections, { step: this.#selected, connection: this.#selectedConnection }, others, this.data.commentCount(p.id))
    const step = steps.find((s) => s.id === this.#selected)
    this.#inspector.update(p, step, steps, connections, !this.#canEdit)
    this.#history.update(step)
    this.#comments.update(p, step, !this.#canEdit)
    this.#versions.update(p, !this.#canEdit)
    this.#members.update(p)
    const byUser = new Map(others.map((o) => [o.userId, o]))
    replaceChildren(
      this.#people,
      byUser.size ? h('span', { class: 'muted small' }, 'Here now:') : null,
      [...byUser.values()].map((o) => {
        const u = this.data.user(o.userId)
        return h('img', { class: 'avatar small', 'data-testid': 'presence-avatar', 'data-user-id': o.userId, src: u?.avatar_url ?? '', alt: o.name, title: o.name, style: { outlineColor: o.color } })
      }),
    )
  }

  destroy(): void {
    document.removeEventListener('keydown', this.#onKey)
    window.removeEventListener('pagehide', this.#onPageHide)
    window.removeEventListener('pageshow', this.#onPageShow)
    this.#history.destroy()
    this.#leaveRoom()
  }
}
