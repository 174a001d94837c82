/** The comments (on the pipeline or the selected step) and versions panels. */

import { ago, h, replaceChildren } from '../dom.js'
import type { Actions, Data, Pipeline, Step } from '../data.js'

export class CommentsPanel {
  readonly el = h('section', { class: 'panel comments', 'data-testid': 'comments' })
  #list = h('ul', { class: 'comment-list' })
  #title = h('h3', {})
  #input = h('textarea', { 'data-testid': 'comment-input', rows: '2', placeholder: 'Write a comment…', 'aria-label': 'Comment', maxlength: '4000' })
  #target: { pipeline: Pipeline; step: Step | undefined } | undefined

  constructor(private readonly data: Data, private readonly actions: Actions, private readonly showPipeline: () => void) {
    const submit = () => {
      const body = this.#input.value.trim()
      if (!body || !this.#target) return
      void this.actions.comment(this.#target.pipeline, this.#target.step?.id ?? null, body)
      this.#input.value = ''
    }
    this.#input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.metaKey || e.ctrlKey)) submit()
    })
    this.el.append(this.#title, this.#list, this.#input, this.#submit)
    this.#submit.onclick = submit
  }

  #submit = h('button', { 'data-testid': 'comment-submit' }, 'Comment')

  update(p: Pipeline, step: Step | undefined, readOnly = false): void {
    this.#target = { pipeline: p, step }
    // Viewers read the discussion; writing takes an editor's role.
    this.#input.hidden = readOnly
    this.#submit.hidden = readOnly
    replaceChildren(
      this.#title,
      step ? `Comments on ${step.name}` : 'Comments on this pipeline',
      step ? h('button', { class: 'link small', onclick: this.showPipeline }, ' (show pipeline comments)') : null,
    )
    this.el.dataset.scope = step ? `step:${step.id}` : 'pipeline'
    const comments = this.data.comments(p.id, step?.id ?? null)
    replaceChildren(
      this.#list,
      comments.length === 0 ? h('li', { class: 'muted small' }, 'No comments yet.') : null,
      comments.map((c) => {
        const author = this.data.user(c.user_id)
        return h(
          'li',
          { class: 'comment', 'data-testid': 'comment', 'data-comment-id': c.id },
          h('img', { class: 'avatar small', src: author?.avatar_url ?? '', alt: '', 'data-testid': 'comment-avatar' }),
          h(
            'div',
            {},
            h('div', { class: 'comment-head' }, h('strong', { 'data-testid': 'comment-author' }, author?.name ?? 'Someone'), ' ', h('span', { class: 'muted small' }, ago(c.created_at))),
            h('div', { class: 'comment-body', 'data-testid': 'comment-body' }, c.body),
          ),
        )
      }),
    )
  }
}

export class VersionsPanel {
  readonly el = h('section', { class: 'panel versions', 'data-testid': 'versions' })
  #list = h('ul', { class: 'version-list' })
  #pipeline: Pipeline | undefined

  #save = h('button', { 'data-testid': 'save-version', onclick: () => this.#pipeline && void this.actions.saveVersion(this.#pipeline) }, 'Save version')

  constructor(private readonly data: Data, private readonly actions: Actions) {
    this.el.append(
      h('h3', {}, 'Versions'),
      this.#save,
      h('p', { class: 'muted small' }, 'The last 10 from the last 30 days.'),
      this.#list,
    )
  }

  update(p: Pipeline, readOnly = false): void {
    this.#pipeline = p
    this.#save.hidden = readOnly
    const versions = this.data.recentVersions(p.id)
    replaceChildren(
      this.#list,
      versions.length === 0 ? h('li', { class: 'muted small' }, 'No saved versions.') : null,
      versions.map((v) =>
        h(
          'li',
          { 'data-testid': 'version', 'data-version': String(v.version_number) },
          h('strong', {}, `v${v.version_number}`),
          ' ',
          h('span', { class: 'muted small' }, `${this.data.user(v.created_by)?.name ?? ''} · ${ago(v.created_at)} · ${v.snapshot?.steps?.length ?? 0} steps`),
          readOnly ? null : h('button', { class: 'link', 'data-testid': 'restore-version', onclick: () => void this.actions.restoreVersion(p, v) }, 'Restore'),
        ),
      ),
    )
  }
}
