/** The pipelines of the signed-in user's teams. */

import { h } from '../dom.js'
import type { Actions, Data } from '../data.js'

export function listView(data: Data, actions: Actions, loaded: boolean): HTMLElement {
  const teams = data.teams()
  const pipelines = data.pipelines()
  const counts = new Map<string, number>()
  for (const s of data.client.rows('steps')) counts.set(String(s.pipeline_id), (counts.get(String(s.pipeline_id)) ?? 0) + 1)
  const body =
    teams.length === 0
      ? h('p', { class: 'muted', 'data-testid': 'no-teams' }, loaded ? 'You are not in any team yet.' : 'Loading…')
      : teams.map((t) =>
          h(
            'section',
            { class: 'team' },
            h('h2', {}, t.name),
            h(
              'ul',
              { class: 'pipeline-list' },
              pipelines
                .filter((p) => p.team_id === t.id)
                .map((p) =>
                  h(
                    'li',
                    {},
                    h(
                      'a',
                      { href: `#/p/${p.id}`, 'data-testid': 'pipeline-link', 'data-pipeline-id': p.id },
                      h('span', { class: 'pipeline-name' }, p.name),
                      h('span', { class: 'muted small' }, `${counts.get(p.id) ?? 0} steps${p.description ? ` · ${p.description}` : ''}`),
                    ),
                  ),
                ),
            ),
            h(
              'button',
              {
                class: 'secondary small',
                'data-testid': 'new-pipeline',
                onclick: async () => {
                  const name = prompt(`Name of the new pipeline in ${t.name}`)?.trim()
                  if (name) location.hash = `#/p/${await actions.createPipeline(t.id, name)}`
                },
              },
              '+ New pipeline',
            ),
          ),
        )
  return h('main', { class: 'list' }, h('h1', {}, 'Pipelines'), body)
}
